"""Reading a run's Allure results back as cells: outcome, reason, what failed, the Allure page."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.report.categories import categories
from harness.report.results import (
    CellId,
    CellResult,
    ReportError,
    RunResult,
    failure_kind,
    outcome_of,
    read_cells,
)

REFUSED = ("harness.errors.MigrationFailed: destination QEMU exited with code 1 during migration: "
           "qemu-system-ppc64: cpu/slb: incoming version_id 2 is too new for local version_id 1 | ...")
STALL = ("harness.errors.CheckFailed: timer ticks on schedule: before=\"every CPU's tick gap <= 750 ms\" "
         "after='gaps: CPU 0 none'\nevidence: CPU 0: no tick after #4")


def _result(name: str, status: str, message: str = "", uuid: str = "u", stop: int = 1) -> dict[str, object]:
    return {"name": name, "uuid": uuid, "status": status, "stop": stop,
            "statusDetails": {"message": message} if message else {}}


class TestOneResult:
    @pytest.mark.parametrize(("status", "message", "outcome"), [
        ("passed", "", "passed"),
        ("failed", REFUSED, "failed"),
        ("broken", "harness.errors.HostError: no sshd", "broken"),
        ("skipped", "XFAIL known failure: DECR not migrated\n\n" + STALL, "known"),
        ("skipped", "Skipped: qemu-10.0 has no machine type pseries-2.7", "skipped"),
        ("failed", "known failure now passes: a>b/pseries-7.2/baseline-idle matched ...", "fixed"),
    ])
    def test_outcome_is_how_the_plugin_reported_it(self, status: str, message: str, outcome: str) -> None:
        assert outcome_of(status, message) == outcome

    def test_what_failed_names_the_refused_stream_and_the_broken_invariant(self) -> None:
        assert failure_kind("failed", REFUSED) == "stream refused on load"
        known = "XFAIL known failure: DECR\n\n" + STALL
        assert failure_kind("known", known) == "invariant: timer ticks on schedule"
        crashed = "harness.errors.QemuCrashed: dst QEMU killed by SIGSEGV"
        assert failure_kind("failed", crashed) == "QEMU crashed"
        assert failure_kind("broken", "harness.errors.HostError: no sshd") == "harness: HostError"
        assert failure_kind("passed", "") == ""

    def test_reason_is_the_first_line_without_the_module_path(self) -> None:
        result = RunResult.from_json(_result("a>b/m/s", "failed", REFUSED, uuid="abc"))
        assert result.reason.startswith("MigrationFailed: destination QEMU exited with code 1")
        assert result.report_id == hashlib.md5(b"abc").hexdigest()  # Allure 3's test result id
        known = RunResult.from_json(_result("a>b/m/s", "skipped", "XFAIL known failure: DECR not migrated\n\n"
                                            + STALL))
        assert known.reason == "DECR not migrated"


def test_a_cell_that_broke_before_its_title_was_set_is_still_its_cell() -> None:
    """A cell broken in setup keeps allure-pytest's name for its test: it is the same cell."""
    for name in ("test_cell[a>b/pseries-7.2/baseline-idle]", "test_cell[a>b/pseries-7.2/baseline-idle#2]"):
        result = RunResult.from_json(_result(name, "broken", "RuntimeError: setup broke"))
        assert (result.cell, result.outcome) == ("a>b/pseries-7.2/baseline-idle", "broken")
    assert RunResult.from_json(_result("libvirt:a>b/m/s", "passed")).cell == "libvirt:a>b/m/s"


def test_cell_id_parts() -> None:
    assert CellId.parse("qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle") == CellId(
        "qemu-7.2", "qemu-10.0", "pseries-7.2", "baseline-idle")


def test_results_of_one_cell_that_differ_make_it_flaky_and_its_page_the_latest(tmp_path: Path) -> None:
    shard_a, shard_b = tmp_path / "a", tmp_path / "b"
    for directory, results in ((shard_a, [_result("x>y/m/s", "passed", uuid="1", stop=10),
                                          _result("x>x/m/s", "passed", uuid="3")]),
                               (shard_b, [_result("x>y/m/s", "failed", REFUSED, uuid="2", stop=20)])):
        directory.mkdir()
        for n, data in enumerate(results):
            (directory / f"{n}-result.json").write_text(json.dumps(data))
    cells = {c.cell: c for c in read_cells([shard_a, shard_b])}
    assert cells["x>y/m/s"].outcome == "flaky"
    assert cells["x>y/m/s"].reason.startswith("1 failed, 1 passed of 2 runs; MigrationFailed")
    assert cells["x>y/m/s"].latest.report_id == hashlib.md5(b"2").hexdigest()
    assert cells["x>x/m/s"].outcome == "passed"


def test_a_directory_without_results_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=f"{tmp_path}: no Allure results"):
        read_cells([tmp_path])
    with pytest.raises(ReportError, match="no such results directory"):
        read_cells([tmp_path / "missing"])


class TestVerdictLabels:
    """Results written with goldmig's verdict and checks as labels (by the plugin, as the test ends)."""

    CHECKS = json.dumps([{"id": "timer-ticks-on-schedule", "verdict": "failed", "explained_by": "3f2a9c1e07",
                          "entry": "*>qemu-7.2/*"},
                         {"id": "ipis", "verdict": "not measured", "cause": "host-overloaded"},
                         {"id": "online-cpus", "verdict": "failed"}])

    def _labelled(self, status: str, verdict: str, checks: str = "", message: str = "") -> RunResult:
        data = _result("a>b/m/s", status, message)
        data["labels"] = [{"name": "verdict", "value": verdict}] + (
            [{"name": "checks", "value": checks}] if checks else [])
        return RunResult.from_json(data)

    def test_a_fixed_cell_is_fixed_whatever_allure_says(self) -> None:
        result = self._labelled("failed", "fixed")  # passed its checks: Allure has no message of ours
        assert (result.outcome, result.status) == ("fixed", "failed")
        assert result.failure == "known failure now passes"

    def test_the_first_unexplained_failed_check_names_the_failure(self) -> None:
        result = self._labelled("failed", "failed", self.CHECKS, STALL)
        assert result.failure == "Failed check: online-cpus"
        assert result.reason.startswith("unexplained: ipis (not measured, after host-overloaded), "
                                        "online-cpus — "
                                        "CheckFailed: timer ticks on schedule")
        assert result.entry == "*>qemu-7.2/* [3f2a9c1e07]"

    def test_a_known_cell_is_named_after_its_first_explained_check(self) -> None:
        checks = json.dumps([json.loads(self.CHECKS)[0]])
        result = self._labelled("skipped", "known", checks, "XFAIL known failure: DECR\n\n" + STALL)
        assert (result.outcome, result.failure) == ("known", "Known: timer-ticks-on-schedule")
        assert result.reason == "timer-ticks-on-schedule by *>qemu-7.2/* — DECR"

    def test_an_unreadable_checks_label_is_no_checks(self) -> None:
        result = self._labelled("failed", "failed", "{torn", REFUSED)
        assert (result.checks, result.failure) == ((), "stream refused on load")


def test_categories_one_per_check_most_frequent_first_before_the_outcomes() -> None:
    def cell(name: str, outcome: str, failure: str) -> CellResult:
        return CellResult(name, (RunResult(name, outcome, "", failure, "id", 1),))

    cells = [cell("a", "failed", "Failed check: ipis"), cell("b", "failed", "Failed check: online-cpus"),
             cell("c", "failed", "Failed check: online-cpus"), cell("d", "failed", "Not measured: ipis"),
             cell("e", "known", "Known: timer-ticks-on-schedule"), cell("f", "broken", "harness: HostError"),
             cell("g", "failed", "stream refused on load")]
    rules = categories(cells)
    assert [r["name"] for r in rules] == [
        "Failed check: online-cpus", "Failed check: ipis", "Not measured: ipis",
        "Product failures: QEMU or the guest misbehaved", "Harness breaks: our bug or the environment",
        "Known failures now passing: review their matrix.yaml entry",
        "Flaky cells: the outcome changed between runs", "Known: timer-ticks-on-schedule",
        "Known failures (declared in matrix.yaml)", "Impossible cells (skipped)"]
    assert rules[0]["matchers"] == {"labels": {"outcome": "^failed$",
                                               "failure": "^Failed\\ check:\\ online\\-cpus$"}}
    assert rules[7]["groupBy"] == [{"label": "entry"}]
