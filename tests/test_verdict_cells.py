"""Verdicts per check on real cells: a known failure explains the checks it names, never the
cell, so one more broken check in a known cell fails it, naming that check."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import ChecksFailed, ProductFailure
from harness.machinestate import MachineState
from harness.matrix.load import load_matrix
from harness.matrix.model import Cell, Matrix
from harness.migration import run
from harness.paths import REPO_ROOT
from harness.qemu.gdbstub import write_register
from harness.qemu.process import QemuProcess
from harness.runner.cell import CellRecord, run_cell
from harness.scenarios import SCENARIOS
from harness.scenarios.hotplug import Plan

pytestmark = pytest.mark.slow

KNOWN_CELL = "qemu-10.0>qemu-10.0/pseries-7.2/baseline-idle"
"""Known: CPU 1 "RTAS stopped" (no tick, the guest silent after it) and MSR[ME] cleared on load."""
PATTERN = "1111111111111111"  # the same bytes in either endianness the gdbstub may use
CTR = 68
"""GDB's number for CTR (target/ppc/gdbstub.c: r0-r31 0-31, then pc 64, msr, cr, lr, ctr)."""


def _matrix() -> Matrix:
    return dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), hosts="local")


def _cell(matrix: Matrix, tmp_path: Path, cell_id: str) -> CellRecord:
    return CellRecord(next(c for c in matrix.cells() if c.id == cell_id), tmp_path / "evidence")


def test_the_known_cell_is_known_with_every_failed_check_explained(tmp_path: Path) -> None:
    matrix = _matrix()
    record = _cell(matrix, tmp_path, KNOWN_CELL)
    with pytest.raises(ChecksFailed):
        run_cell(record.cell, matrix, record)
    assert record.verdict is not None and record.verdict.outcome == "known", record.verdict.reason
    explained = {v.check.id for v in record.verdict.checks if v.explained_by is not None}
    assert {"timer-ticks-on-schedule", "machine-state-cpu-0-msr", "machine-state-cpu-1-msr"} <= explained


def test_one_more_broken_check_in_a_known_cell_fails_it_naming_that_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CTR of CPU 0 changed on the held destination (through QEMU's gdbstub) before the
    comparison: the cell's known failures are still there and still explained, and the cell
    fails on the one check none of them explains. (CTR, dead where an idle CPU waits: a changed
    GPR31 panics the guest's kernel at once, "Attempted to kill the idle task", and the cell then
    ends early on the crash; QEMU 10.0's gdbstub takes no write of an FPR by its old number.)"""
    monkeypatch.setattr(run, "capture", _tampering(run.capture))
    matrix = _matrix()
    record = _cell(matrix, tmp_path, KNOWN_CELL)

    with pytest.raises(ChecksFailed) as raised:
        run_cell(record.cell, matrix, record)

    assert record.verdict is not None and record.verdict.outcome == "failed"
    assert record.verdict.reason.splitlines()[0] == "unexplained: machine-state-cpu-0-ctr"
    changed = raised.value.named("machine state: CPU 0 CTR")
    assert changed.after == PATTERN
    still = {v.check.id for v in record.verdict.checks if v.explained_by is not None}
    assert {"timer-ticks-on-schedule", "machine-state-cpu-0-msr"} <= still


def test_an_unexplained_plug_failure_in_a_cell_with_the_known_decr_loss_fails_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """7.2>7.2 hotplug-cpu-50ms loses its decrementer (known, on the machine state and the ticks);
    here the destination is also not given the plugged core, so it refuses the stream. The
    7.2 hotplug entry explains the ticks only (it once took any plug failure that came with
    them): the cell fails, naming the refused migration."""
    declared = SCENARIOS["hotplug"]
    broken = dataclasses.replace(declared.variant("cpu-50ms"),
                                 data=Plan("plug", 50, destination_core=False))
    monkeypatch.setitem(SCENARIOS, "hotplug", dataclasses.replace(declared, variants=tuple(
        broken if v.name == broken.name else v for v in declared.variants)))
    matrix = _matrix()
    cell = Cell("qemu-7.2", "qemu-7.2", "latest-common", "hotplug", "cpu-50ms")
    record = CellRecord(cell, tmp_path / "evidence")

    with pytest.raises(ProductFailure):
        run_cell(cell, matrix, record)

    assert record.verdict is not None and record.verdict.outcome == "failed"
    assert record.verdict.reason.splitlines()[0].startswith("unexplained: migration-completes")
    assert "cpu_common" in record.verdict.reason


def _tampering(real: Callable[..., MachineState]) -> Callable[..., MachineState]:
    """``capture`` that first writes :data:`PATTERN` to CPU 0's CTR on a held destination,
    through a gdbstub socket in the cell's run directory (beside QMP's, where a QEMU run from
    a suite root can create it; tmp_path is not visible there)."""
    def capture(side: QemuProcess, label: str, evidence: Path | None = None) -> MachineState:
        if label.startswith("destination"):
            write_register(side, side.paths.qmp.with_suffix(".gdb"), thread=1, register=CTR,
                           value=PATTERN)
        return real(side, label, evidence)
    return capture
