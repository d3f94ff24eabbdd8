"""Faults injected into real cells are reported as what they are, soon, with the evidence,
and leave nothing behind: a dead QEMU is never a quiet guest, a hung one never a harness break.

Each ``fault`` variant kills (SIGKILL) or stops (SIGSTOP) one side at boot, mid-migration
or during the checks of a real cell with the host's QEMU 7.2; the cell passes when the
harness named the fault right (harness/scenarios/fault.py). A fault during the checks comes
after a completed hop, whose machine state 7.2 never keeps (its DECR, a known failure of the
shipped matrix, which these cells are judged with): such a cell is known for that alone.
A cell whose fault came before any hop completed compares no machine state and passes (an
entry whose checks were not measured in a cell is not "fixed" by it).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.checks.result import Verdict
from harness.errors import QemuCrashed
from harness.matrix.load import load_matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_cell, run_judged
from harness.scenarios import SCENARIOS
from harness.scenarios.fault import DETECT_S, FaultObservations

pytestmark = pytest.mark.slow
VARIANTS = [v.name for v in SCENARIOS["fault"].variants]


def _matrix(tmp_path: Path, scenarios: list[str], **extra: object) -> Path:
    data = {
        "builds": {"qemu-7.2": {"kind": "host"}},
        "hosts": "local",
        "groups": [{"name": "g", "builds": ["qemu-7.2"], "machines": ["pseries-7.2"],
                    "scenarios": scenarios}],
        "selections": {"all": ["*"]},
        "default_selection": "all",
        **extra,
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_injected_fault_is_reported_as_what_it_is(
        tmp_path: Path, cell_tmp: Path, variant: str, machine_state_known: Callable[..., set[str]]) -> None:
    shipped = load_matrix(REPO_ROOT / "matrix.yaml")
    matrix = dataclasses.replace(load_matrix(_matrix(tmp_path, [f"fault-{variant}"])),
                                 known_failures=shipped.known_failures)
    (cell,) = matrix.cells()
    record = CellRecord(cell, tmp_path / "evidence")
    verdict = run_judged(cell, matrix, record)

    obs = record.observations
    assert isinstance(obs, FaultObservations)
    failed = [f"{c.invariant}: {c.after}" for c in record.checks
              if not c.ok and not c.id.startswith("machine-state-")]
    assert failed == [], obs.reported
    if obs.fault.when == "check":  # after a completed hop: 7.2's lost DECR, on both CPUs
        assert machine_state_known(record) == {"machine-state-cpu-0-decr", "machine-state-cpu-1-decr"}
    else:  # no hop completed, nothing compared: passed
        assert not record.migrations and not any(c.counts_against for c in record.checks)
        assert verdict.outcome == "passed", verdict.reason
    assert obs.detect_s is not None and obs.detect_s <= DETECT_S[obs.fault.action]
    kept = {p.name for p in (tmp_path / "evidence").iterdir()}
    assert {"src-serial.log", "src-qmp.log", "dst-qmp.log", "fault-reported.txt"} <= kept
    assert "no tick" not in obs.reported.splitlines()[0], "a dead or hung QEMU is not a quiet guest"


def test_a_killed_destination_under_a_known_failure_is_a_crash_not_known(
    tmp_path: Path, cell_tmp: Path, processes_mentioning: Callable[[str], list[int]]
) -> None:
    """The user's report: kill -9 of the destination QEMU 1.5 s after migrate in a baseline
    cell that the DECR entry covers became KNOWN ("no tick heartbeat"). It must be a crash,
    named as such, that no known failure explains."""
    shipped = load_matrix(REPO_ROOT / "matrix.yaml")
    matrix = load_matrix(_matrix(tmp_path, ["baseline-idle"]))
    matrix = dataclasses.replace(matrix, known_failures=shipped.known_failures)
    (cell,) = matrix.cells()
    # 0.3 s after the destination resumes: while the harness waits for the ticks the lost
    # decrementer stops (about 1 s), as the user's kill 1.5 s after migrate did when cells were slower
    killer = threading.Thread(target=_kill_after_resume,
                              args=(cell_tmp, "dst", 0.3, processes_mentioning), daemon=True)
    killer.start()
    record = CellRecord(cell, tmp_path / "evidence")
    with pytest.raises(QemuCrashed) as raised:
        run_cell(cell, matrix, record)
    killer.join(timeout=30)
    message = f"{type(raised.value).__name__}: {raised.value}"
    assert "dst QEMU (qemu-7.2) was killed by signal 9" in message.splitlines()[0]
    assert record.verdict is not None and record.verdict.outcome == "failed", record.verdict
    (crash,) = [v for v in record.verdict.checks if v.check.invariant == "QEMU stays up"]
    assert crash.check.verdict is Verdict.FAILED and crash.explained_by is None
    assert "was killed by signal 9" in crash.check.message
    assert "qemu-stays-up" in record.verdict.reason.splitlines()[0], record.verdict.reason
    assert not any(k.explains(crash.check.id, crash.check.message)
                   for k in matrix.known_failures_for(cell.id))
    assert (tmp_path / "evidence" / "dst-serial.log").exists()


def _kill_after_resume(runs: Path, role: str, delay: float,
                       processes_mentioning: Callable[[str], list[int]]) -> None:
    """SIGKILL ``role``'s QEMU ``delay`` seconds after the harness resumed it (``cont``) after the
    migration."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = list(runs.glob(f"*/{role}-qmp.log"))
        if logs and '"execute": "cont"' in logs[0].read_text():
            time.sleep(delay)
            for pid in processes_mentioning(str(logs[0].parent / f"{role}.qmp")):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)
