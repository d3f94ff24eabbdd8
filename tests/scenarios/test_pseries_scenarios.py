"""The pseries scenarios against real QEMU: each passes where QEMU behaves, and fails when its
invariant is broken on purpose (no check is vacuous).

A completed hop to 10.0 is never clean now: the destination flips MSR[ME] and 7.2 sends a stale
decrementer (matrix.yaml's machine-state entries), so "passes" for the intc cell means every
other check passed and those entries explain the rest: the cell is known."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.checks.result import Verdict
from harness.errors import ChecksFailed, ProductFailure
from harness.matrix.load import load_matrix
from harness.matrix.model import GuestSettings, Matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_judged
from harness.scenarios import SCENARIOS
from harness.scenarios.declare import MachineChange, Variant

pytestmark = pytest.mark.slow

ONE_CPU = GuestSettings(smp=1, maxcpus=1)
"""A completed migration to a Debian build loses a CPU's timer with 2 CPUs (known failures in
matrix.yaml: 7.2 loses the decrementer, 10.0 leaves CPU 1 "RTAS stopped"); the intc tests
migrate 7.2 to 10.0 with one CPU, which that pair migrates cleanly."""


def _matrix() -> Matrix:
    return dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), hosts="local")


def _run(tmp_path: Path, cell_id: str, matrix: Matrix, record: CellRecord | None = None) -> CellRecord:
    """Run the cell (into ``record`` if given); raises ChecksFailed only when it failed."""
    record = record or CellRecord(next(c for c in matrix.cells() if c.id == cell_id), tmp_path / "evidence")
    run_judged(record.cell, matrix, record)
    return record


def _with_variant(monkeypatch: pytest.MonkeyPatch, scenario: str, variant: Variant[Any]) -> None:
    """Replace one of ``scenario``'s declared variants (same name) for this test."""
    declared = SCENARIOS[scenario]
    variants = tuple(variant if v.name == variant.name else v for v in declared.variants)
    monkeypatch.setitem(SCENARIOS, scenario, dataclasses.replace(declared, variants=variants))


CAPS_CELL = "qemu-7.2>qemu-7.2/latest-common/caps-vsx"  # the migration fails: no timer bug to meet


def test_caps_refused_by_name_and_the_source_carries_on(tmp_path: Path) -> None:
    from harness.scenarios.caps import CapsObservations

    record = _run(tmp_path, CAPS_CELL, _matrix())

    obs = record.observations
    assert isinstance(obs, CapsObservations)
    assert "cap-vsx higher level (1) in incoming stream than on destination (0)" in obs.migration_outcome
    assert obs.source_status == "running" and obs.destination_state == "exited with code 1"
    assert len(obs.source.ticks_after) == 2 and None not in obs.source.ticks_after.values()
    assert record.checks[0].invariant == "destination refuses cap-vsx above its own"
    assert all(c.ok for c in record.checks)


def test_caps_cell_fails_when_the_destination_allows_the_capability(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Expectation inverted: the destination allows VSX too, the migration completes, and the
    cell fails on the scenario's own check, not on a timer."""
    same = MachineChange(properties=(("cap-vsx", "on"),))
    _with_variant(monkeypatch, "caps", Variant("vsx", "vsx", source=same, destination=same))

    with pytest.raises(ChecksFailed) as raised:
        _run(tmp_path, CAPS_CELL, _matrix())

    assert not raised.value.named("destination refuses cap-vsx above its own").ok
    assert not raised.value.named("QEMU's message names the capability").ok


INTC_CELL = "qemu-7.2>qemu-10.0/pseries-4.2/intc-xive"
IPIS = "IPIs delivered between every pair of CPUs"


def test_intc_keeps_xive_with_ticks_and_progress(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    from harness.scenarios.intc import IntcObservations

    record = _run(tmp_path, INTC_CELL, dataclasses.replace(_matrix(), guest=ONE_CPU))

    obs = record.observations
    assert isinstance(obs, IntcObservations)
    assert obs.before.intc == "XIVE" and obs.after is not None and obs.after.intc == "XIVE"
    assert [c.invariant for c in record.checks[:2]] == [
        "guest uses the variant's interrupt controller", "same interrupt controller after migration"]
    assert machine_state_known(record) == {
        "machine-state-cpu-0-msr", "machine-state-cpu-0-decr"}
    rest = [c for c in record.checks if not c.id.startswith("machine-state-")]
    assert [c.invariant for c in rest if c.verdict is Verdict.NOT_APPLICABLE] == [IPIS], "one CPU"
    assert all(c.ok for c in rest if c.invariant != IPIS)


def test_intc_cell_fails_when_ic_mode_differs_between_the_sides(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The destination runs XICS only while the guest uses XIVE: the cell fails, and no declared
    known failure explains it."""
    _with_variant(monkeypatch, "intc", Variant(
        "xive", "XIVE", source=MachineChange(properties=(("ic-mode", "xive"),)),
        destination=MachineChange(properties=(("ic-mode", "xics"),))))
    matrix = dataclasses.replace(_matrix(), guest=ONE_CPU)
    record = CellRecord(next(c for c in matrix.cells() if c.id == INTC_CELL), tmp_path / "evidence")

    with pytest.raises(ProductFailure) as raised:
        _run(tmp_path, INTC_CELL, matrix, record)

    message = f"{type(raised.value).__name__}: {raised.value}"
    assert "xive" in message.lower(), message
    assert record.verdict is not None and record.verdict.outcome == "failed", record.verdict
    unexplained = [v.check for v in record.verdict.checks if v.unexplained]
    assert unexplained and not any(c.id.startswith("machine-state-") for c in unexplained), unexplained
    assert not [k for k in matrix.known_failures_for(INTC_CELL) for c in unexplained
                if k.explains(c.id, c.message)]
