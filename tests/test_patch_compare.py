"""A per-patch job's verdict, check by check against the base twin (no QEMU: cells.json-like
outcomes in, changes out)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from harness.commands.patch_compare import compare, differing, summary, twin, write_junit
from harness.report.run_summary import CellOutcome

CELL = "qemu-7.2>candidate/pseries-9.2/baseline-idle"
TWIN = "qemu-7.2>base/pseries-9.2/baseline-idle"


def _run(cell: str, outcome: str = "known", attempt: int = 1, **verdicts: str) -> CellOutcome:
    checks = [{"id": check.replace("_", "-"), "verdict": verdict.replace("_", " "),
               "measured": f"{check} seen"} for check, verdict in verdicts.items()]
    return CellOutcome(cell, outcome, checks=checks, attempt=attempt)


def test_the_twin_swaps_the_candidate_for_the_base_on_either_side_and_keeps_the_driver() -> None:
    assert twin(CELL) == TWIN
    assert twin("candidate>candidate/latest-common/timebase") == "base>base/latest-common/timebase"
    assert twin("libvirt:candidate>qemu-10.0/pseries-7.2/baseline-idle") == \
        "libvirt:base>qemu-10.0/pseries-7.2/baseline-idle"
    assert twin(TWIN) is None


def test_each_check_is_judged_against_the_base() -> None:
    changes = compare([
        _run(TWIN, machine_state_cpu_0_ctr="passed", timer_ticks="failed", answers="passed",
             decr="failed"),
        _run(CELL, machine_state_cpu_0_ctr="failed", timer_ticks="failed", answers="passed",
             decr="passed"),
    ])
    got = {c.check: c.change for c in changes}
    assert got == {"machine-state-cpu-0-ctr": "breaks", "timer-ticks": "same failure",
                   "answers": "same pass", "decr": "fixes"}
    assert differing(changes) == [CELL]


def test_not_measured_with_the_candidate_breaks_a_check_the_base_passed() -> None:
    changes = compare([_run(TWIN, ipis="passed"), _run(CELL, ipis="not_measured")])
    assert [(c.check, c.change) for c in changes] == [("ipis", "breaks")]


def test_a_check_that_differs_between_runs_of_one_build_is_flaky_not_a_break() -> None:
    changes = compare([
        _run(TWIN, ticks="passed"), _run(TWIN, attempt=2, ticks="failed"),
        _run(CELL, ticks="failed"), _run(CELL, attempt=2, ticks="failed"),
    ])
    assert [c.change for c in changes] == ["flaky"]
    assert changes[0].base == ("passed", "failed")


def test_a_failed_check_that_only_one_run_of_a_build_made_is_flaky_not_a_fix() -> None:
    # measured: candidate == base, timebase, 10.0's stalled CPU 1: in one base run of three the
    # guest did not answer after hop 1 (check guest-answers-after-hop-1, failed); the other runs
    # and the candidate's three never made that check
    runs = [_run(TWIN, attempt=1, answers_after_hop_1="failed"), _run(TWIN, attempt=2),
            _run(TWIN, attempt=3), *(_run(CELL, attempt=n) for n in (1, 2, 3))]
    assert [(c.check, c.change) for c in compare(runs)] == [("answers-after-hop-1", "flaky")]
    once = compare([_run(TWIN, answers_after_hop_1="failed"), _run(CELL)])
    assert [c.change for c in once] == ["fixes"], "one run each: a difference, to be run again"


def test_a_check_not_applicable_in_some_runs_of_a_build_and_failed_in_others_is_flaky() -> None:
    # measured: the CTR-breaking candidate, hotplug-cpu-0ms on pseries-7.2: the base's IPI check
    # not measured twice (the guest stalled) and not applicable once (one CPU online), the
    # candidate's not applicable three times; not a fix
    runs = [_run(TWIN, attempt=1, ipis="not_measured"), _run(TWIN, attempt=2, ipis="not_measured"),
            _run(TWIN, attempt=3, ipis="not_applicable"),
            *(_run(CELL, attempt=n, ipis="not_applicable") for n in (1, 2, 3))]
    assert [c.change for c in compare(runs)] == ["flaky"]


def test_a_candidate_cell_whose_base_could_not_run_is_judged_alone() -> None:
    changes = compare([_run(TWIN, outcome="skipped"), _run(CELL, outcome="failed", ticks="failed")])
    assert [c.change for c in changes] == ["alone"]
    lines = summary(changes, {CELL: "failed"})
    assert lines[0].startswith("goldmig patch: breaks 0, fixes 0")
    assert lines[-1].startswith(f"ALONE         {CELL}: failed")


def test_not_applicable_on_both_sides_is_no_change() -> None:
    assert compare([_run(TWIN, ipis="not_applicable"), _run(CELL, ipis="not_applicable")]) == []


def test_the_summary_counts_first_and_junit_has_a_case_per_differing_check(tmp_path: Path) -> None:
    changes = compare([_run(TWIN, a="passed", b="failed", c="passed"),
                       _run(CELL, a="failed", b="passed", c="passed")])
    lines = summary(changes, {})
    assert lines[0] == ("goldmig patch: breaks 1, fixes 1 (flaky 0, same failure 0, same pass 1; "
                        "checks of 1 cell pairs, candidate against base)")
    assert lines[1].startswith(f"BREAKS        {CELL}: a: base passed, candidate failed")
    out = tmp_path / "junit.xml"
    write_junit(changes, str(out))
    suite = ElementTree.parse(out).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert [(case.get("name"), case.find("failure") is not None) for case in suite] == [("a", True),
                                                                                       ("b", False)]


def test_a_machine_state_field_the_base_found_equal_is_a_pass_not_a_missing_check() -> None:
    # the base compared every field and found them equal (machine-state passed), or named only
    # MSR; the candidate names CTR: the base's CTR was equal, so the candidate breaks it
    equal = compare([_run(TWIN, machine_state="passed"), _run(CELL, machine_state_cpu_0_ctr="failed")])
    assert [(c.check, c.base, c.change) for c in equal] == [
        ("machine-state-cpu-0-ctr", ("passed",), "breaks")]
    other = compare([_run(TWIN, machine_state_cpu_0_msr="failed"),
                     _run(CELL, machine_state_cpu_0_msr="failed", machine_state_cpu_0_ctr="failed")])
    assert {c.check: (c.base, c.change) for c in other} == {
        "machine-state-cpu-0-msr": (("failed",), "same failure"),
        "machine-state-cpu-0-ctr": (("passed",), "breaks")}
    hops = compare([_run(TWIN, machine_state_across_hop_1="passed",
                         machine_state_across_hop_2="not_measured"),
                    _run(CELL, machine_state_cpu_1_ctr_across_hop_1="failed",
                         machine_state_cpu_1_ctr_across_hop_2="failed")])
    got = {c.check: (c.base, c.change) for c in hops}
    assert got["machine-state-cpu-1-ctr-across-hop-1"] == (("passed",), "breaks")
    assert got["machine-state-cpu-1-ctr-across-hop-2"] == ((), "breaks"), \
        "hop 2's state was not read on the base: its field is not a pass"
