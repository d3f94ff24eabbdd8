"""KVM cells on nested hosts against real QEMU: two L1 VMs booted here under TCG, each a POWER
KVM host, the golden guest migrated between them with accel=kvm.

The pair is booted once for this module (about 10 s) and reused by both tests, as a run's
cells reuse it. The first test is the nested smoke cell as a project test (it passes on a
healthy pair, with the KVM-only checks measured); the second is the timebase checks'
non-vacuity under KVM: the hop's stream is loaded into a fresh destination with spapr's
``guest_timebase`` (and the virtual clock) ten seconds earlier, and the cell fails on it. Ten,
not one: the guest can only see a step back past its own last reading before the stop, and an
L1 starved under load has kept a guest CPU from ticking for up to 2.4 s before it (a 1 s rewind
then passed unseen, 1 run in 6).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.checks.result import Verdict
from harness.errors import ChecksFailed
from harness.matrix.load import load_matrix
from harness.matrix.model import GuestSettings, Matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_cell
from harness.scenarios import SCENARIOS
from harness.scenarios.declare import Variant
from harness.scenarios.timebase import Plan

pytestmark = pytest.mark.slow

SMOKE = "kvm:qemu-7.2>qemu-7.2/latest-common/baseline-idle"
TIMEBASE = "kvm:qemu-7.2>qemu-7.2/latest-common/timebase"
MIGRATED = "migrated timebase resumed on the destination"


def _matrix() -> Matrix:
    return load_matrix(REPO_ROOT / "matrix.yaml")


def _show_evidence(evidence: Path, lines: int = 80) -> None:
    """Print the tail of the cell's log and of every console it kept (shown with a failure)."""
    for log in sorted(evidence.rglob("*.log")):
        if log.name == "harness.log" or "console" in log.name or "serial" in log.name:
            print(f"==> {log.relative_to(evidence)} (last {lines} lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


def test_the_guest_migrates_between_two_kvm_hosts(tmp_path: Path) -> None:
    """The smoke cell passes; one second run is allowed when the guest went silent after the hop
    (the first run's logs are printed): in about 1 run in 5 of the project's tests (2 of 10 on
    2026-12-06/07), the guest's CPU 1 ticks on schedule on the destination, then stops for
    seconds, ticks and busy beats alike, and the agent cannot switch its load. Not diagnosed: the
    L0 here emulates both L1s' vCPUs on 2 cores, and that starvation is not measured from L2's
    side (docs/hosts-and-drivers.md, nested KVM)."""
    matrix = _matrix()
    cell = next(c for c in matrix.cells() if c.id == SMOKE)
    record = CellRecord(cell, tmp_path / "evidence")

    try:
        run_cell(cell, matrix, record)
    except ChecksFailed as exc:
        _show_evidence(tmp_path / "evidence")  # pytest rotates tmp_path: the failure report keeps it
        if exc.named("guest answers after the migration").verdict is not Verdict.FAILED:
            raise
        print("==> the guest went silent after the hop: the cell once more")
        record = CellRecord(cell, tmp_path / "evidence-again")
        run_cell(cell, matrix, record)
    except BaseException:
        _show_evidence(tmp_path / "evidence")
        raise

    assert record.parameters["accel"] == "kvm" and "nested KVM hosts" in record.parameters["hosts"]
    checks = {c.invariant: c for c in record.checks}
    assert checks[MIGRATED].verdict is Verdict.PASSED, checks[MIGRATED]
    assert "guest_timebase" in checks[MIGRATED].evidence
    state = checks["machine state"]
    assert state.verdict is Verdict.PASSED and "TBU, TB, DECR not compared under KVM" in str(state.after)
    evidence = record.evidence
    consoles = {p.name for p in evidence.rglob("l1-*-console.log")}
    summary = next(evidence.rglob("stream-src-dst.summary.txt")).read_text()
    assert consoles == {"l1-a-console.log", "l1-b-console.log"}, sorted(evidence.rglob("*"))
    assert "timebase: guest_timebase" in summary
    argv = next(evidence.rglob("src-argv.txt")).read_text()
    assert "kvm" in argv.split("-accel", 1)[1].split()[0]


def test_the_cell_fails_when_the_migrated_timebase_goes_back(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    declared = SCENARIOS["timebase"]
    monkeypatch.setitem(SCENARIOS, "timebase", dataclasses.replace(
        declared, variants=(Variant("", Plan(hops=1, rewind_ms=10_000)),)))
    matrix = dataclasses.replace(_matrix(), guest=GuestSettings(smp=1, maxcpus=1))
    cell = next(c for c in matrix.cells() if c.id == TIMEBASE)

    with pytest.raises(ChecksFailed) as raised:
        run_cell(cell, matrix, CellRecord(cell, tmp_path / "evidence"))

    migrated = raised.value.named(MIGRATED)
    assert migrated.verdict is Verdict.FAILED, raised.value
    assert "older than the guest's last reading" in str(migrated.after)
    back = raised.value.named("timebase never goes backwards across hop 1")
    # the guest sees the step back when it still answers; set back 10 s, its timer often waits
    # those 10 s, and the guest-side check is then not measured, caused by the missed tick
    assert back.verdict is Verdict.FAILED or (back.verdict is Verdict.NOT_MEASURED
                                              and back.cause and back.cause.startswith("timer-ticks")), back
