"""A cell's verdict judged check by check against known_failures entries. No QEMU here."""

from __future__ import annotations

from harness.checks.generic import STALL
from harness.checks.result import HOST_OVERLOADED, CheckResult, Verdict, not_applicable, not_measured
from harness.checks.verdict import failure_checks, judge
from harness.errors import MigrationFailed, QemuCrashed
from harness.matrix.model import KnownFailure

TICKS = CheckResult("timer ticks on schedule", False, "<= 830 ms", "gaps: CPU 0 none",
                    "CPU 0: no tick after #5 within 1830 ms of the destination resuming")
IPIS = CheckResult("IPIs delivered between every pair of CPUs", False, "2 pairs answered",
                   {"0->1": -1, "1->0": 40000}, "lost: ['0->1']")
BARS = CheckResult("PCI devices and BARs", False, "bars a", "bars b", "/sys/bus/pci")
ONLINE = CheckResult("online CPUs", True, "0-1", "0-1", "/sys/devices/system/cpu/online")
DECR = KnownFailure(("*>qemu-7.2/*",), ("timer-ticks-on-schedule",), r"(?s)evidence: .*CPU \d+: no tick",
                    "lost decrementer", "runs")
RTAS = KnownFailure(("*>qemu-10.0/*",), ("timer-ticks-on-schedule", "ipis-*"), "CPU .: no tick|0->1",
                    "RTAS stopped", "runs")


class TestExplained:
    def test_every_failed_check_explained_is_known_naming_the_entries(self) -> None:
        verdict = judge([ONLINE, TICKS, IPIS], [RTAS])
        assert verdict.outcome == "known" and verdict.reason == "RTAS stopped"
        assert [v.explained_by for v in verdict.checks] == [None, RTAS, RTAS]

    def test_an_unexplained_check_fails_the_cell_naming_it_first(self) -> None:
        verdict = judge([TICKS, IPIS, BARS], [RTAS])
        assert verdict.outcome == "failed"
        assert verdict.reason.splitlines()[0] == "unexplained: pci-devices-and-bars"

    def test_an_entry_explains_only_the_checks_it_names(self) -> None:
        verdict = judge([TICKS, IPIS], [DECR])
        assert verdict.outcome == "failed" and "unexplained: ipis-delivered" in verdict.reason

    def test_the_match_is_searched_in_that_checks_message_only(self) -> None:
        wrong_cpu = KnownFailure(("*",), ("timer-ticks-on-schedule",), "CPU 1: no tick", "r", "e")
        assert judge([TICKS], [wrong_cpu]).outcome == "failed"


class TestNotMeasured:
    def test_not_measured_because_of_an_explained_failure_is_explained_with_it(self) -> None:
        silent = not_measured("online CPUs", "no reply to 'probe'", cause=STALL)
        verdict = judge([TICKS, silent], [DECR])
        assert verdict.outcome == "known" and verdict.checks[1].explained_by is DECR

    def test_not_measured_without_a_cause_must_be_explained_itself(self) -> None:
        silent = not_measured("online CPUs", "no reply to 'probe'")
        assert judge([silent], [DECR]).outcome == "failed"

    def test_not_applicable_does_not_count(self) -> None:
        one = not_applicable("IPIs delivered between every pair of CPUs", "1 CPU")
        assert judge([ONLINE, one], []).outcome == "passed"
        assert not one.ok and one.verdict is Verdict.NOT_APPLICABLE

    def test_host_overloaded_alone_is_broken_not_failed(self) -> None:
        starved = not_measured("timer ticks on schedule", "CPU 0 waited 400 ms", cause=HOST_OVERLOADED)
        assert judge([ONLINE, starved], []).outcome == "broken"
        assert judge([starved, BARS], []).outcome == "failed"


class TestFixed:
    def test_a_steady_entry_whose_checks_all_passed_is_fixed_even_beside_another_known_failure(
            self) -> None:
        ticking = CheckResult("timer ticks on schedule", True, "b", "gaps", "e")
        other = KnownFailure(("*",), ("pci-*",), "bars", "PCI", "e")
        verdict = judge([ticking, BARS], [DECR, other])
        assert verdict.outcome == "fixed" and verdict.fixed == (DECR,)

    def test_an_intermittent_entry_that_did_not_reproduce_is_not_fixed(self) -> None:
        ticking = CheckResult("timer ticks on schedule", True, "b", "gaps", "e")
        flaky = KnownFailure(DECR.cells, DECR.checks, DECR.match, "r", "e", intermittent=True)
        assert judge([ticking], [flaky]).outcome == "passed"

    def test_an_entry_whose_check_was_not_measured_is_not_fixed(self) -> None:
        refused = failure_checks(MigrationFailed("cpu/slb: incoming version_id 2 is too new"))
        slb = KnownFailure(("*",), ("migration-completes",), "cpu/slb", "slb", "e")
        verdict = judge(refused, [slb, DECR])
        assert verdict.outcome == "known" and verdict.fixed == ()


class TestFailuresThatEndAScenario:
    def test_a_refused_migration_is_the_migration_completes_check_and_the_rest_follow_it(self) -> None:
        checks = failure_checks(MigrationFailed("source reports migration failed: cpu/slb ..."))
        assert [(c.id, c.verdict) for c in checks] == [
            ("migration-completes", Verdict.FAILED), ("checks-after-the-failure", Verdict.NOT_MEASURED)]
        assert checks[1].cause == "migration-completes"
        assert "MigrationFailed: source reports" in checks[0].message

    def test_a_crash_is_qemu_stays_up(self) -> None:
        assert failure_checks(QemuCrashed("dst QEMU killed by signal 6"))[0].id == "qemu-stays-up"
