"""The hotplug scenario against real QEMU: its own checks are measured before a known timer failure
can end the cell, device_add mid-migration is refused, and a destination without the plugged core
fails the cell (no check is vacuous).

A hop to QEMU 10.0 is never clean now: it flips MSR[ME] on every CPU, and a 7.2 source sends a
stale decrementer (matrix.yaml's machine-state entries). "Passes" below means every other check
passed and those entries explain the rest."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.checks.result import Verdict
from harness.checks.verdict import failure_checks, judge
from harness.errors import ChecksFailed, ProductFailure
from harness.matrix.load import load_matrix
from harness.matrix.model import Matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_cell, run_judged
from harness.scenarios import SCENARIOS
from harness.scenarios.declare import MachineChange, Variant
from harness.scenarios.hotplug import DIMM_MB, HotplugObservations, Plan
from harness.stream.drc import DRC_STATES

pytestmark = pytest.mark.slow

REFUSED = "qemu-7.2>qemu-10.0/latest-common/hotplug-refused"
SETTLED = "qemu-10.0>qemu-10.0/latest-common/hotplug-cpu-settled"
STOPPED = "qemu-7.2>qemu-10.0/latest-common/hotplug-cpu-stopped-0ms"
CONFIGURING = "qemu-10.0>qemu-10.0/latest-common/hotplug-cpu-stopped-2ms"
MEMORY = "qemu-10.0>qemu-10.0/latest-common/hotplug-memory-0ms"
MACHINE_STATE = "machine-state-"
IPIS = "IPIs delivered between every pair of CPUs"


def _matrix() -> Matrix:
    return dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), hosts="local")


def _run(tmp_path: Path, cell_id: str, matrix: Matrix) -> CellRecord:
    """Run the cell; raises ChecksFailed only when it failed (a known cell returns, judged)."""
    cell = next(c for c in matrix.cells() if c.id == cell_id)
    record = CellRecord(cell, tmp_path / "evidence")
    run_judged(cell, matrix, record)
    return record


def _others_passed(record: CellRecord, cpus: int = 1) -> bool:
    """Every check but the machine state's passed, or, on a guest with one CPU online, the IPI
    check alone had nothing to measure."""
    rest = [c for c in record.checks if not c.id.startswith(MACHINE_STATE)]
    idle = [c.invariant for c in rest if c.verdict is Verdict.NOT_APPLICABLE]
    assert idle == ([IPIS] if cpus == 1 else []), [(c.invariant, c.verdict.value) for c in rest if not c.ok]
    return all(c.ok for c in rest if c.invariant not in idle)


def test_device_add_during_migration_is_refused_and_the_guest_is_unchanged(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    record = _run(tmp_path, REFUSED, _matrix())

    obs = record.observations
    assert isinstance(obs, HotplugObservations)
    assert obs.refusal == "GenericError: device_add not allowed while migrating"
    assert not obs.core_src and not obs.core_dst
    assert [c.invariant for c in record.checks[:2]] == [
        "device_add refused during migration", "no core plugged on either side"]
    assert machine_state_known(record) == {"machine-state-cpu-0-msr", "machine-state-cpu-0-decr"}
    assert _others_passed(record)


def _outcome(exc: ProductFailure, matrix: Matrix, cell_id: str) -> str:
    """The cell's outcome judged from what ended it, as the plugin judges it."""
    checks = exc.results if isinstance(exc, ChecksFailed) else failure_checks(exc)
    return judge(checks, matrix.known_failures_for(cell_id)).outcome


def _caught(tmp_path: Path, cell_id: str, phase: str, failing: bool,
            attempts: int) -> tuple[CellRecord, str]:
    """Run ``cell_id`` until its stop lands in ``phase`` (the DRC state the stream carries) and
    a check other than the machine state's fails or not (``failing``); the stop's place is the
    host's timing, so a run that caught another phase is retried, at most ``attempts`` times.
    Returns the record and the failure's message ("" when the cell was not failed)."""
    matrix = _matrix()
    cell = next(c for c in matrix.cells() if c.id == cell_id)
    seen = []
    for attempt in range(attempts):
        record = CellRecord(cell, tmp_path / f"evidence-{attempt}")
        message = ""
        try:
            message = run_judged(cell, matrix, record).reason
        except ProductFailure as exc:
            message = f"{type(exc).__name__}: {exc}"
        failed = any(c.counts_against and not c.id.startswith(MACHINE_STATE) for c in record.checks)
        obs = record.observations
        assert isinstance(obs, HotplugObservations)
        states = [DRC_STATES[d.state] for d in obs.drcs]
        seen.append((states, failed))
        if states == [phase] and failed == failing:
            return record, message
    raise AssertionError(f"{cell_id}: no run caught {phase!r} {'failing' if failing else 'passing'} "
                         f"in {attempts}: {seen}")


def test_a_hotplug_the_guest_had_not_seen_completes_on_the_destination(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    """Stopped right after device_add: the core's DRC travels unconfigured in the stream, and the
    guest brings the CPU online on the destination, where every per-CPU check runs on it (about
    11 stops in 12 land there on an idle host)."""
    record, _ = _caught(tmp_path, STOPPED, "logical unusable", failing=False, attempts=3)

    obs = record.observations
    assert isinstance(obs, HotplugObservations)
    assert (obs.new_cpu, obs.announced_on, obs.new_cpu_ticked) == (1, "destination", True)
    both_cpus = {f"machine-state-cpu-{n}-{field}" for n in (0, 1) for field in ("msr", "decr")}
    assert machine_state_known(record) <= both_cpus
    assert _others_passed(record, cpus=2)
    assert {p.cpu for p in obs.seen.progress} == {0, 1}


def test_a_stop_inside_configure_connector_loses_the_plugged_cpu(tmp_path: Path) -> None:
    """Stopped inside the guest's configure-connector walk (about 5 stops in 6 at 3 ms, fewer on a
    loaded host, hence 6 attempts): the destination restarts the walk, the guest gives the CPU
    up, and the declared known failure (the walk is not migrated) explains the cell."""
    record, message = _caught(tmp_path, CONFIGURING, "logical unisolate", failing=True, attempts=6)

    assert record.checks[1].invariant == "plugged CPU comes online" and not record.checks[1].ok
    assert record.checks[0].ok  # the core is on both sides: QEMU thinks the plug went through
    assert record.verdict is not None and record.verdict.outcome == "known", message


def test_plugged_cpu_is_checked_before_the_known_timer_failure(tmp_path: Path) -> None:
    """A settled plug to QEMU 10.0: the core is on both sides and the CPU online there (own checks
    pass), then the plugged CPU meets the known "RTAS stopped" failure, which explains the cell."""
    matrix = _matrix()
    record = CellRecord(next(c for c in matrix.cells() if c.id == SETTLED), tmp_path / "evidence")

    with pytest.raises(ChecksFailed) as raised:
        run_cell(record.cell, matrix, record)

    ticks = raised.value.named("timer ticks on schedule")
    assert "CPU 1: no tick" in ticks.evidence
    own = record.checks[:3]
    assert [c.invariant for c in own] == [
        "plugged core present on both sides", "plugged CPU comes online", "online CPUs after the plug"]
    assert all(c.ok for c in own)
    assert record.verdict is not None and record.verdict.outcome == "known", record.verdict


def test_cell_fails_when_the_destination_lacks_the_plugged_core(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The destination is not given the core: QEMU cannot load the plugged CPU's state, the cell
    fails, and no declared known failure explains it."""
    declared = SCENARIOS["hotplug"]
    without = Variant("cpu-settled", Plan("plug", None, destination_core=False),
                      source=MachineChange(smp=1, maxcpus=2))
    monkeypatch.setitem(SCENARIOS, "hotplug", dataclasses.replace(declared, variants=tuple(
        without if v.name == without.name else v for v in declared.variants)))
    matrix = _matrix()

    with pytest.raises(ProductFailure) as raised:
        _run(tmp_path, SETTLED, matrix)

    message = f"{type(raised.value).__name__}: {raised.value}"
    assert "cpu" in message.lower(), message
    assert _outcome(raised.value, matrix, SETTLED) == "failed", message


def test_plugged_dimm_is_online_in_the_guest_on_the_destination(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    record = _run(tmp_path, MEMORY, _matrix())

    obs = record.observations
    assert isinstance(obs, HotplugObservations)
    assert obs.core_src and obs.core_dst
    assert obs.mem_after_kb == obs.before.probe.mem_total_kb + DIMM_MB * 1024
    assert machine_state_known(record) == {"machine-state-cpu-0-msr"}
    assert _others_passed(record)


def test_cell_fails_when_the_destination_lacks_the_plugged_dimm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    declared = SCENARIOS["hotplug"]
    room = declared.variant("memory-0ms").source
    without = dataclasses.replace(declared.variant("memory-0ms"), destination=room)
    monkeypatch.setitem(SCENARIOS, "hotplug", dataclasses.replace(declared, variants=tuple(
        without if v.name == without.name else v for v in declared.variants)))
    matrix = _matrix()

    with pytest.raises(ProductFailure) as raised:
        _run(tmp_path, MEMORY, matrix)

    message = f"{type(raised.value).__name__}: {raised.value}"
    assert _outcome(raised.value, matrix, MEMORY) == "failed", message
