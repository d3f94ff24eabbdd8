"""Stale known_failures entries: entries that explained nothing in a run that ran all their cells.

An entry's cells are every cell of the full matrix its ``cells`` globs cover. When a run judged
all of them (every outcome but a cell broken before any check, so that a broken host never
makes an entry look stale; a skipped, impossible cell can never be explained and counts) and
no check in any of them was explained by the entry (its key in a check's ``explained_by``), the
entry is listed for review: its failure may be fixed, or its ``match`` or ``check`` may no
longer fit the message. A hint, never a failure of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.matrix.model import KnownFailure, Matrix
from harness.report.run_summary import CellOutcome


@dataclass(frozen=True)
class StaleEntry:
    entry: KnownFailure
    cells: int
    """How many cells of the full matrix the entry covers (all of them ran)."""

    def line(self) -> str:
        intermittent = " (intermittent: it may reproduce another time)" if self.entry.intermittent else ""
        return (f"  stale known_failures entry: cells {', '.join(self.entry.cells)}, checks "
                f"{', '.join(self.entry.checks)}; explained nothing in its {self.cells} cell"
                f"{'' if self.cells == 1 else 's'} this run{intermittent} [{self.entry.key}]")


def stale_entries(matrix: Matrix, outcomes: Iterable[CellOutcome]) -> list[StaleEntry]:
    """The entries whose cells all ran in ``outcomes`` and explained no check in any of them."""
    outcomes = list(outcomes)
    ran = {o.cell for o in outcomes if o.checks or o.outcome != "broken"}
    used = {c["explained_by"] for o in outcomes for c in o.checks if c.get("explained_by")}
    every = [c.id for c in matrix.cells()]
    stale = []
    for entry in matrix.known_failures:
        covered = [cell for cell in every if entry.covers(cell)]
        if covered and ran.issuperset(covered) and entry.key not in used:
            stale.append(StaleEntry(entry, len(covered)))
    return stale


def stale_lines(stale: list[StaleEntry]) -> list[str]:
    if not stale:
        return []
    return [f"stale entries: {len(stale)} (a review hint, not a failure)"] + [s.line() for s in stale]
