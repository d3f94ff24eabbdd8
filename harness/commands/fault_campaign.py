"""`goldmig faults`: the fault campaign (harness/scenarios/fault.py) against any build, as a
lab would run it to check its own hosts: per fault, what the harness reported, how soon, what
evidence it kept, and whether anything was left behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.hosts.setns import list_namespaces
from harness.matrix.model import Matrix

SELECTION = "faults"


def faults_matrix(matrix: Matrix, build: str | None, machine: str) -> dict[str, Any]:
    """The matrix's builds, hosts and settings with one group: ``build`` to itself, every fault."""
    name = build or next(iter(matrix.builds))
    if name not in matrix.builds:
        raise ConfigError(matrix.source, "builds", f"no build {name!r}; the matrix has "
                          f"{', '.join(matrix.builds)} (goldmig faults --build NAME)")
    raw: dict[str, Any] = yaml.safe_load(Path(matrix.source).read_text())
    raw["groups"] = [{"name": "faults", "builds": [name], "machines": [machine], "scenarios": ["fault"]}]
    raw["selections"] = {SELECTION: ["*"]}
    raw["default_selection"] = SELECTION
    raw["known_failures"] = []  # a fault cell passes when the fault is named right: nothing to expect
    return raw


def table(reports: Path) -> list[str]:
    """One line per fault cell of the last run in ``reports``, then what the run left behind."""
    lines = [f"{'fault':18} {'cell':7} {'reported as':60} {'detect':>7}  evidence kept"]
    for outcome in json.loads((reports / "cells.json").read_text()):
        cell = outcome["cell"]
        evidence = reports / "runs" / cell.replace(">", "_").replace("/", "_")
        reported = _reported(evidence)
        detect = _detect_s(evidence)
        kept = sorted(p.name for p in evidence.iterdir()) if evidence.is_dir() else []
        logs = sum(name.endswith(("-serial.log", "-qmp.log", "-qemu.log")) for name in kept)
        lines.append(f"{cell.rsplit('/fault-', 1)[-1]:18} {outcome['outcome']:7} {reported[:60]:60} "
                     f"{detect:>7}  {len(kept)} files ({logs} logs)")
    lines.append(f"left behind: {', '.join(leaks()) or 'nothing'} (QEMU processes, run directories, "
                 "namespaces of this run)")
    return lines


def leaks() -> list[str]:
    """This process's run directories, QEMUs and namespaces that still exist."""
    prefix = f"gm-run-{os.getpid()}-"
    found = [str(p) for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if prefix.encode() in cmdline and b"qemu" in cmdline:
            found.append(f"process {pid}")
    found += [n for n in list_namespaces() if n.startswith(f"gm-{os.getpid()}-")]
    return found


def _reported(evidence: Path) -> str:
    path = evidence / "fault-reported.txt"
    return path.read_text().splitlines()[0] if path.exists() else "(no report)"


def _detect_s(evidence: Path) -> str:
    path = evidence / "fault-detect.json"
    if not path.exists():
        return "-"
    seconds = json.loads(path.read_text()).get("detect_s")
    return "-" if seconds is None else f"{seconds:.2f}s"
