"""The run's summary and cells.json: each cell's checks beside its outcome, checks measured."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report.run_summary import CellOutcome, read_cells_json, summary_lines, write_cells_json

TICKS = {"id": "timer-ticks-on-schedule", "name": "timer ticks on schedule", "verdict": "failed",
         "measured": "gaps: CPU 0 none", "explained_by": "3f2a9c1e07", "entry": "*>qemu-7.2/*/baseline-idle"}
PROGRESS = {"id": "cpu-progress-on-every-cpu", "name": "CPU progress on every CPU", "verdict": "not measured",
            "measured": "not measured", "cause": "timer-ticks-on-schedule", "explained_by": "3f2a9c1e07",
            "entry": "*>qemu-7.2/*/baseline-idle"}
PASSED = [{"id": f"check-{n}", "name": f"check {n}", "verdict": "passed", "measured": "ok"} for n in range(3)]
NA = {"id": "ipis", "name": "IPIs", "verdict": "not applicable", "measured": "not applicable"}


def _outcomes() -> list[CellOutcome]:
    online = {"id": "online-cpus", "name": "online CPUs", "verdict": "failed", "measured": "0"}
    return [
        CellOutcome("a>b/m/s", "known", "the decrementer", {"total": 3.0},
                    [*PASSED[:1], TICKS, PROGRESS, NA]),
        CellOutcome("b>a/m/s", "failed",
                    "unexplained: online-cpus\nfailed: online CPUs: before='0-1' after='0'",
                    {"total": 4.0}, [*PASSED, online]),
        CellOutcome("a>a/m/s", "passed", "", {"total": 2.0}, PASSED),
        CellOutcome("c>c/m/s", "passed", "", {"total": 2.0}, PASSED[:2]),
        CellOutcome("old/m/s", "broken", "HostError: no sshd", {"total": 1.0}),
    ]


def test_each_cell_says_which_checks_failed_and_what_explained_them() -> None:
    lines = summary_lines(_outcomes())
    assert lines[0] == "goldmig: 5 cells: 2 passed, 1 failed, 0 flaky, 1 known, 0 fixed, 1 broken, 0 skipped"
    [failed] = [x for x in lines if x.startswith("  FAIL")]
    assert failed.endswith("[unexplained: online-cpus]  failed: online CPUs: before='0-1' after='0'")
    [known] = [x for x in lines if x.startswith("  KNOWN")]
    assert known.endswith("[timer-ticks-on-schedule, cpu-progress-on-every-cpu (not measured, after "
                          "timer-ticks-on-schedule) by *>qemu-7.2/*/baseline-idle]  the decrementer")
    [broken] = [x for x in lines if x.startswith("  BROKEN")]
    assert broken.endswith("   1.0s  HostError: no sshd")


def test_checks_measured_per_outcome() -> None:
    assert summary_lines(_outcomes())[-1] == ("checks measured (passed or failed) per cell, median: "
                                              "passed 2.5 (2 cells), failed 4 (1 cell), known 2 (1 cell)")


def test_cells_json_round_trips_and_old_files_without_checks_still_read(tmp_path: Path) -> None:
    path = tmp_path / "cells.json"
    write_cells_json(path, _outcomes())
    assert read_cells_json(path) == _outcomes()
    path.write_text(json.dumps([{"cell": "a>b/m/s", "outcome": "passed", "reason": "",
                                 "phases": {"total": 1.5}},
                                {"cell": "b>a/m/s", "outcome": "failed", "reason": "x", "phases": {},
                                 "checks": [TICKS], "written_by": "a newer goldmig"}]))
    old, new = read_cells_json(path)
    assert (old.checks, old.phases) == ([], {"total": 1.5})
    assert new.checks == [TICKS]
    assert summary_lines([old])[-1].startswith("  PASS")  # no checks: no checks-measured line
