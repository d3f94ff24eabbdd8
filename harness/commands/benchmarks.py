"""Benchmarks that are commands, not timed tests: recording cost, provisioning, throughput."""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.errors import GoldmigError
from harness.matrix.model import Matrix
from harness.paths import reports_root
from harness.report.run_summary import read_cells_json
from harness.runner.cell import CellRecord, run_cell


def recording_overhead(matrix: Matrix, cell_id: str, repeat: int) -> list[str]:
    """Run ``cell_id`` ``repeat`` times with and without the recording relay, alternating.

    Compares QEMU's own ``total-time`` of the migration and the wall time of
    the migrate phase; returns the report lines.
    """
    cell = next((c for c in matrix.cells() if c.id == cell_id), None)
    if cell is None:
        raise GoldmigError(f"bench: no cell {cell_id!r} in {matrix.source}")
    samples: dict[str, list[tuple[int, float]]] = {"direct": [], "recorded": []}
    with tempfile.TemporaryDirectory(prefix="gm-bench-") as scratch:
        for i in range(repeat):
            for mode in ("direct", "recorded") if i % 2 == 0 else ("recorded", "direct"):
                keep = "none" if mode == "direct" else "all"
                record = CellRecord(cell, Path(scratch) / f"{mode}-{i}")
                run_cell(cell, dataclasses.replace(matrix, keep_streams=keep), record)
                assert record.observations is not None
                samples[mode].append((record.migrations[0].figures.total_time_ms,
                                      record.phases["migrate"]))
    lines = [f"recording overhead, {cell_id}, {repeat} runs each (median):"]
    medians = {}
    for mode, runs in samples.items():
        total = statistics.median(t for t, _ in runs)
        wall = statistics.median(w for _, w in runs)
        medians[mode] = (total, wall)
        lines.append(f"  {mode:9} QEMU total-time {total:7.1f} ms   migrate phase {wall * 1000:7.1f} ms")
    (d_total, d_wall), (r_total, r_wall) = medians["direct"], medians["recorded"]
    lines.append(f"  recorded/direct: total-time x{r_total / d_total:.3f}, "
                 f"migrate phase x{r_wall / d_wall:.3f} (goal: at most x1.05)")
    return lines


def provisioning(suite: str) -> list[str]:
    """Time a Debian-suite build cold (debootstrap into an empty cache) and cached."""
    with tempfile.TemporaryDirectory(prefix="gm-bench-cache-") as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        code = f"from harness.builds.debian import ensure_suite_root as e; e({suite!r})"
        times = []
        for _ in range(2):
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.monotonic() - started)
    return [f"provisioning {suite}: cold {times[0]:.1f} s, cached {times[1]:.2f} s"]


def throughput(matrix_path: Path, selection: str, workers: list[str]) -> list[str]:
    """Cells per minute of ``selection`` at each worker count (a full `goldmig run` each)."""
    lines = []
    for n in workers:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "harness.cli", "run", "--matrix", str(matrix_path),
                        "--select", selection, "-n", n], stdout=subprocess.DEVNULL, check=False)
        wall = time.monotonic() - started
        outcomes = read_cells_json(reports_root() / "cells.json")
        ran = [o for o in outcomes if o.outcome != "skipped"]
        lines.append(f"{selection} at -n {n}: {len(outcomes)} cells ({len(ran)} ran) in {wall:.0f} s"
                     f" = {len(outcomes) * 60 / wall:.1f} cells/min ({len(ran) * 60 / wall:.1f} run/min)")
    return lines
