"""goldmig's run history: every run's outcome per cell, one JSON line per run, and what changed.

``reports/history/runs.jsonl`` gets a line at the end of each run (the run
id, when it finished, its selection, each cell's outcome and reason, and each
judged cell's failed and not measured checks with the known_failures entry,
by key, that explained each). What changed is judged per cell against that
cell's latest earlier outcome, so a shard or a selection compares with the
last run that had the cell. A known cell that was known then too is
*known, failure changed* when a check newly failed or is newly not measured,
or another entry explains it now: the declared failure is not the one that
happens any more, so the run fails. A line written before checks were kept
has none: its cells' checks are not compared. A line that cannot be read (a
run killed while writing it) is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.report.checklist import CheckStates

RUNS_FILE = "runs.jsonl"
FAILING = ("failed", "broken")
"""Outcomes where QEMU, the guest or the harness went wrong."""
FAILURE_CHANGED = "known, failure changed"
"""A known cell whose failed checks or explaining entries changed: fails the run."""
_KINDS = ("newly failing", "newly passing", "newly known", FAILURE_CHANGED, "flaky")


@dataclass(frozen=True)
class RunEntry:
    """One run in the history."""

    run: str
    finished: str
    """ISO 8601, UTC."""
    label: str
    """What ran (matrix and selection), for people."""
    cells: dict[str, tuple[str, str]]
    """Cell id -> (outcome, short reason)."""
    checks: dict[str, CheckStates] = field(default_factory=dict)
    """Cell id -> its failed and not measured checks (id -> verdict, explaining entry's key or
    ""), for each cell that was judged check by check; absent in lines of older runs."""

    def to_json(self) -> str:
        return json.dumps({"run": self.run, "finished": self.finished, "label": self.label,
                           "cells": {c: list(v) for c, v in self.cells.items()},
                           "checks": {c: {i: list(v) for i, v in states.items()}
                                      for c, states in self.checks.items()}})

    @classmethod
    def from_json(cls, line: str) -> RunEntry:
        data = json.loads(line)
        checks = data.get("checks") or {}
        return cls(str(data["run"]), str(data["finished"]), str(data.get("label", "")),
                   {str(c): (str(v[0]), str(v[1])) for c, v in data["cells"].items()},
                   {str(c): {str(i): (str(v[0]), str(v[1])) for i, v in states.items()}
                    for c, states in checks.items()})


@dataclass(frozen=True)
class Change:
    cell: str
    kind: str
    """newly failing, newly passing, newly known, known, failure changed or flaky."""
    now: str
    before: str
    reason: str


@dataclass(frozen=True)
class Changes:
    """The current outcomes against each cell's previous one."""

    changes: tuple[Change, ...]
    compared: int
    """Cells that had an earlier outcome."""
    new_cells: int
    """Cells seen for the first time."""
    since: str | None
    """When the latest earlier run compared with finished (None: no earlier run)."""

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def fails_run(self) -> list[Change]:
        """Changes that fail the run: a known cell whose failure is not the declared one any more."""
        return self.of_kind(FAILURE_CHANGED)

    def headline(self) -> str:
        if self.since is None:
            return "what changed: nothing to compare with (no earlier run in the history)"
        counts = ", ".join(f"{len(self.of_kind(k))} {k}" for k in _KINDS
                           if k != FAILURE_CHANGED or self.of_kind(k))  # said when it happens
        new = f", {_count(self.new_cells, 'new cell')}" if self.new_cells else ""
        since = self.since[:16].replace("T", " ")
        return f"what changed since {since} UTC: {counts} ({_count(self.compared, 'cell')} compared{new})"

    def lines(self, width: int = 0) -> list[str]:
        """The headline and one line per changed cell, for the run's summary."""
        width = width or max((len(c.cell) for c in self.changes), default=0)
        return [self.headline()] + [f"  {c.kind:13} {c.cell:{width}}  was {c.before}, now {c.now}"
                                    + (f": {c.reason[:200 if c.kind == FAILURE_CHANGED else 120]}"
                                       if c.reason else "") for c in self.changes]


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_runs(path: Path) -> list[RunEntry]:
    """The history, oldest first; empty when there is none yet."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(RunEntry.from_json(line))
        except (ValueError, KeyError, TypeError, IndexError):
            continue  # a torn line from a run killed while appending
    return entries


def append_run(path: Path, entry: RunEntry) -> None:
    """Append one line in one write (O_APPEND): concurrent runs never interleave lines, and a
    line torn by a killed run is ended first so that it spoils only itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, ("\n" if torn else "").encode() + (entry.to_json() + "\n").encode())
    finally:
        os.close(fd)


def what_changed(current: Mapping[str, tuple[str, str]], earlier: Iterable[RunEntry],
                 checks: Mapping[str, CheckStates] | None = None,
                 intermittent: Collection[str] = ()) -> Changes:
    """Each current cell against its latest outcome in ``earlier`` (oldest first); with
    ``checks`` (the current cells' failed and not measured checks), a known cell's checks
    against those of its latest earlier run, when that run kept them. ``intermittent`` are the
    keys of entries declared intermittent: a check they explain may come and go."""
    entries = list(earlier)
    previous: dict[str, str] = {}
    previous_checks: dict[str, CheckStates | None] = {}
    for entry in entries:
        for cell, (outcome, _) in entry.cells.items():
            previous[cell] = outcome
            previous_checks[cell] = entry.checks.get(cell)
    changes = []
    for cell, (now, reason) in sorted(current.items()):
        before = previous.get(cell)
        kind = _kind(before, now)
        then, mine = previous_checks.get(cell), (checks or {}).get(cell)
        if not kind and now == before == "known" and then is not None and mine is not None:
            changed = failure_changes(then, mine, intermittent)
            if changed:
                kind, reason = FAILURE_CHANGED, changed
        if kind:
            changes.append(Change(cell, kind, now, before or "", reason))
    order = {k: n for n, k in enumerate(_KINDS)}
    changes.sort(key=lambda c: (order[c.kind], c.cell))
    compared = sum(cell in previous for cell in current)
    return Changes(tuple(changes), compared, len(current) - compared,
                   entries[-1].finished if entries else None)


def failure_changes(before: CheckStates, now: CheckStates, intermittent: Collection[str] = ()) -> str:
    """What is new in a known cell's failure, e.g. ``ipis-delivered-... newly failed (entry
    3f2a...); guest-answers... newly not measured; timer-ticks-on-schedule explained by 9c1e...,
    was 3f2a...``; empty when nothing is (a check that stopped failing is not a change of the
    failure: the entry still explains the rest; nor is a check coming back under an entry in
    ``intermittent``, which declares that it comes and goes)."""
    said = []
    for check, (verdict, key) in now.items():
        was = before.get(check)
        if (was is None or was[0] != verdict) and key in intermittent:
            continue
        if was is None or was[0] != verdict:
            by = f" (explained by {key})" if key else " (unexplained)"
            said.append(f"{check} newly {verdict if verdict == 'not measured' else 'failed'}{by}")
        elif was[1] != key:
            said.append(f"{check} explained by {key or 'nothing'}, was {was[1] or 'nothing'}")
    return "; ".join(said)


def _kind(before: str | None, now: str) -> str:
    if now == "flaky":
        return "flaky"
    if before is None or before == now:
        return ""
    if now in FAILING and before not in FAILING:
        return "newly failing"
    if now in ("passed", "fixed") and before in (*FAILING, "known", "flaky"):
        return "newly passing"  # fixed: a known failure that passes now
    if now == "known":
        return "newly known"
    return ""


def record_run(directory: Path, run: RunEntry, intermittent: Collection[str] = ()) -> Changes:
    """What changed since the history in ``directory``; then ``run`` is appended to it."""
    path = directory / RUNS_FILE
    changes = what_changed(run.cells, read_runs(path), run.checks, intermittent)
    append_run(path, run)
    return changes
