"""The timebase scenario against real QEMU: its own checks pass for every hop where QEMU keeps the
timebase, and the cell fails on them when the timebase is made to go backwards (no check is
vacuous).

No build lets a test force one CPU's timebase off the others' under TCG: a vCPU's ``mftb`` is
the virtual clock plus its ``tb_offset`` (hw/ppc/ppc.c ``cpu_ppc_get_tb``), which no stream
carries (target/ppc/machine.c has no field for it; spapr's ``guest_timebase`` is applied only
under KVM), the guest cannot write TBL/TBU (hypervisor-only SPRs, a pseries guest runs with
MSR[HV]=0), and the gdbstub's SPR write goes to ``env->spr[]``, which ``mftb`` does not read
(target/ppc/gdbstub.c ``gdb_set_spr_reg`` in 7.2 and 10.0). So the forced failure is the
machine's clock set back in the stream, every CPU at once; the cross-CPU bound is shown to
fail by the unit tests (tests/test_tbwarp_checks.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import ChecksFailed
from harness.matrix.load import load_matrix
from harness.matrix.model import GuestSettings, Matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_cell
from harness.scenarios import SCENARIOS
from harness.scenarios.declare import Variant
from harness.scenarios.timebase import Plan, TimebaseObservations

pytestmark = pytest.mark.slow

CELL = "qemu-7.2>qemu-7.2/latest-common/timebase"
"""Every hop's own checks are measured even though this pair loses the decrementer (a known
failure: the cell then fails at "timer ticks on schedule", after them)."""
ATTEMPTS = 3
"""Runs of CELL until the guest answered after every hop: with the decrementer lost, a CPU 0
whose spinner holds it without a timer sometimes never lets the agent's command loop run (CI,
2026-11-29: CPU 0 silent on the third QEMU), and the hop's checks are then not measured."""
REWIND_CELL = "qemu-10.0>qemu-10.0/latest-common/timebase"
"""One CPU on QEMU 10.0, which keeps its timer across a migration: the rewound clock is the only
thing wrong there."""
OWN = ("timebase never goes backwards", "timebase forward jump within bound", "timebase in step")


def _matrix() -> Matrix:
    return dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), hosts="local")


def _run(tmp_path: Path) -> CellRecord:
    matrix = _matrix()
    cell = next(c for c in matrix.cells() if c.id == CELL)
    silent = []
    for attempt in range(ATTEMPTS):
        record = CellRecord(cell, tmp_path / f"evidence-{attempt}")
        try:
            run_cell(cell, matrix, record)
        except ChecksFailed as failed:  # the known timer failure: not the scenario's own checks
            assert not [c for c in failed.failed if c.invariant.startswith(OWN) and c.ok is False
                        and c.verdict.value == "failed"], failed
        obs = record.observations
        assert isinstance(obs, TimebaseObservations)
        if len(obs.hops) == 3 and not any(h.silence for h in obs.hops):
            return record
        silent.append([h.silence for h in obs.hops])
    raise AssertionError(f"{CELL}: the guest did not answer after every hop in {ATTEMPTS} runs: {silent}")


def _own(record: CellRecord) -> list[str]:
    return [c.invariant for c in record.checks if c.invariant.startswith(OWN)]


def test_every_hop_keeps_each_cpus_timebase_and_all_in_step(tmp_path: Path) -> None:
    record = _run(tmp_path)

    obs = record.observations
    assert isinstance(obs, TimebaseObservations)
    assert [h.number for h in obs.hops] == [1, 2, 3] and len(record.migrations) == 3
    for hop in obs.hops:
        assert hop.warp is not None and hop.stats is not None
        assert all(c.cross > 0 and c.max_warp == 0 for c in hop.warp.cpus), hop.warp
        assert len(hop.warp.cpus) == 2 and all(c.samples > 0 for c in hop.stats.cpus)
        assert hop.stats.seq < hop.warp.seq, "the watchers are read before tbwarp pauses them"
    assert len(_own(record)) == 9
    assert all(c.ok for c in record.checks if c.invariant in _own(record))
    assert record.checks[:9] == [c for c in record.checks if c.invariant in _own(record)]


def test_cell_fails_when_the_timebase_goes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hop's stream is loaded into a fresh QEMU with the virtual clock a second earlier: the
    CPU's watcher sees its timebase go back, and the cell fails on that check."""
    declared = SCENARIOS["timebase"]
    monkeypatch.setitem(SCENARIOS, "timebase", dataclasses.replace(
        declared, variants=(Variant("", Plan(hops=1, rewind_ms=1000)),)))
    matrix = dataclasses.replace(_matrix(), guest=GuestSettings(smp=1, maxcpus=1))
    cell = next(c for c in matrix.cells() if c.id == REWIND_CELL)

    with pytest.raises(ChecksFailed) as raised:
        run_cell(cell, matrix, CellRecord(cell, tmp_path / "evidence"))

    check = raised.value.named("timebase never goes backwards across hop 1")
    assert check.verdict.value == "failed", raised.value
    back = check.after
    assert isinstance(back, str) and "largest backward step by CPU: {0: " in back, back
