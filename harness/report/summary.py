"""The one-screen summary of a run, and cells.json for the benchmark and CI."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

OUTCOMES = ("passed", "failed", "known", "fixed", "broken", "skipped")
REASON_CHARS = 160
"""Enough for an error's type, what happened and QEMU's own last words, e.g.
``QemuStartError: src QEMU (mine) exited with code 1 at start: qemu-system-ppc64: ...``."""
_LABEL = {"passed": "PASS", "failed": "FAIL", "known": "KNOWN", "fixed": "FIXED?",
          "broken": "BROKEN", "skipped": "SKIP"}


@dataclass(frozen=True)
class CellOutcome:
    cell: str
    outcome: str
    reason: str = ""
    phases: dict[str, float] = field(default_factory=dict)


def summary_lines(outcomes: list[CellOutcome]) -> list[str]:
    counts = Counter(o.outcome for o in outcomes)
    head = ", ".join(f"{counts.get(k, 0)} {k}" for k in OUTCOMES)
    lines = [f"goldmig: {len(outcomes)} cells: {head}"]
    width = max((len(o.cell) for o in outcomes), default=10)
    for o in sorted(outcomes, key=lambda o: (OUTCOMES.index(o.outcome), o.cell)):
        total = o.phases.get("total")
        time = f"{total:6.1f}s" if total is not None else "      -"
        reason = f"  {o.reason.splitlines()[0][:REASON_CHARS]}" if o.reason else ""
        lines.append(f"  {_LABEL[o.outcome]:6} {o.cell:{width}} {time}{reason}")
    lines.append("  (known = declared in matrix.yaml known_failures; FIXED? = a known failure "
                 "that now passes: review and remove its entry)" if counts.get("fixed") or
                 counts.get("known") else "")
    return [line for line in lines if line]


def write_cells_json(path: Path, outcomes: list[CellOutcome]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))


def read_cells_json(path: Path) -> list[CellOutcome]:
    return [CellOutcome(**item) for item in json.loads(path.read_text())]
