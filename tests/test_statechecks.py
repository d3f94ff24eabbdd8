"""The machine state across each hop as checks: what differs fails by name, a clean hop passes
saying what it compared, and a hop whose state was not read is never a pass. No QEMU here."""

from __future__ import annotations

from harness.checks.machine_state import machine_state_checks
from harness.checks.result import Verdict
from harness.drivers.libvirt import NOT_READ
from harness.machinestate import Component, MachineState, compare_all
from harness.migration.run import MigrationFigures, MigrationResult
from harness.runner.roles import Hop

FIGURES = MigrationFigures("completed", 400, 30, 1, 1000, 1000, {})


def _state(side: str, decr: str) -> MachineState:
    return MachineState(side, (Component("CPU 0", {"TB": "100", "DECR": decr, "HF": side}),
                               Component("ICS", {"range": "4096-8191"})))


def _hop(source: str = "5507926", destination: str = "5507926", **unread: str) -> MigrationResult:
    if unread:
        return MigrationResult(Hop("src", "dst"), FIGURES, None, 0, 0.4, None, unread["why"])
    state = compare_all(_state("source src", source), _state("destination dst", destination), 12.0)
    return MigrationResult(Hop("src", "dst"), FIGURES, None, 0, 0.4, state)


def test_each_field_that_differs_is_a_failed_check_with_both_values() -> None:
    (decr,) = machine_state_checks([_hop(destination="18446744072946885439")])
    assert (decr.invariant, decr.verdict, decr.id) == (
        "machine state: CPU 0 DECR", Verdict.FAILED, "machine-state-cpu-0-decr")
    assert (decr.before, decr.after) == ("5507926", "18446744072946885439")
    assert "2 components, 4 fields compared" in decr.evidence


def test_a_clean_hop_passes_saying_what_it_compared_and_excused() -> None:
    (clean,) = machine_state_checks([_hop()])
    assert clean.verdict is Verdict.PASSED and clean.invariant == "machine state"
    assert "4 fields compared; 1 differences excused" in str(clean.after)
    assert "CPU 0 HF" in clean.evidence and "excused" in clean.evidence


def test_hops_are_numbered_when_there_are_several() -> None:
    checks = machine_state_checks([_hop(), _hop(destination="0")])
    assert [c.invariant for c in checks] == ["machine state across hop 1",
                                             "machine state: CPU 0 DECR across hop 2"]


def test_a_state_not_read_is_not_measured() -> None:
    (unread,) = machine_state_checks([_hop(why="destination dst not read: HMP 'info pic': ...")])
    assert unread.verdict is Verdict.NOT_MEASURED and not unread.ok
    assert "info pic" in unread.evidence


def test_under_the_libvirt_driver_it_is_not_applicable() -> None:
    (libvirt,) = machine_state_checks([_hop(why=NOT_READ)])
    assert libvirt.verdict is Verdict.NOT_APPLICABLE and not libvirt.ok


def test_a_field_one_build_does_not_print_is_named_as_not_compared() -> None:
    source = MachineState("source src", (Component("CPU 0", {"TB": "100", "DECR": "5"}),))
    destination = MachineState("destination dst", (Component("CPU 0", {"TB": "100", "DECR": "5",
                                                                       "TB_OFFSET": "0"}),))
    hop = MigrationResult(Hop("src", "dst"), FIGURES, None, 0, 0.4, compare_all(source, destination, 3.0))
    (clean,) = machine_state_checks([hop])
    assert clean.verdict is Verdict.PASSED and "1 components, 2 fields compared" in str(clean.after)
    assert clean.evidence.endswith(
        "not compared, printed by one build only: CPU 0 TB_OFFSET (destination only)")
