"""The one-screen summary of a run, and cells.json for the benchmark and CI.

With ``--repeat`` a cell runs several times: the summary gives one line per
cell with how many runs passed, and a cell whose outcome changed between runs
is *flaky*.

A failed, broken or flaky cell's line is followed by where its harness log is
(``log: reports/runs/<cell>/harness.log``, :mod:`harness.runner.celllog`), when the cell wrote one.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from statistics import median

from harness.report.checklist import measured, note
from harness.runner.celllog import LOG_NAME, evidence_dir

OUTCOMES = ("passed", "failed", "flaky", "known", "fixed", "broken", "skipped")
REASON_CHARS = 160
"""Enough for an error's type, what happened and QEMU's own last words, e.g.
``QemuStartError: src QEMU (mine) exited with code 1 at start: qemu-system-ppc64: ...``."""
_LABEL = {"passed": "PASS", "failed": "FAIL", "flaky": "FLAKY", "known": "KNOWN", "fixed": "FIXED?",
          "broken": "BROKEN", "skipped": "SKIP"}


@dataclass(frozen=True)
class CellOutcome:
    cell: str
    outcome: str
    reason: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[dict[str, str]] = field(default_factory=list)
    """Each check's id, verdict, what it measured and the known_failures entry that explained it
    (:func:`harness.checks.verdict.checks_json`)."""
    attempt: int = 1
    """Which run of the cell this was (``--repeat``), from 1: where its evidence is
    (:func:`harness.runner.celllog.evidence_dir`)."""


@dataclass(frozen=True)
class CellRuns:
    """Every run of one cell, in order."""

    cell: str
    runs: tuple[CellOutcome, ...]

    @property
    def outcome(self) -> str:
        outcomes = {r.outcome for r in self.runs}
        return outcomes.pop() if len(outcomes) == 1 else "flaky"

    @property
    def passed(self) -> int:
        return sum(r.outcome == "passed" for r in self.runs)

    @property
    def telling(self) -> CellOutcome | None:
        """The run with the most telling reason (an intermittent pass's note comes last)."""
        runs = sorted((r for r in self.runs if r.reason), key=lambda r: r.reason.startswith("intermittent"))
        return runs[0] if runs else None

    @property
    def reason(self) -> str:
        """The first line of the most telling reason; for a cell judged check by check, whose
        first line lists the unexplained checks (the checks' note says so), the line after it:
        the first unexplained check's message."""
        run = self.telling
        if run is None:
            return ""
        lines = run.reason.splitlines() or [""]
        if lines[0].startswith(_UNEXPLAINED) and run.checks and len(lines) > 1:
            return lines[1][:REASON_CHARS]
        return lines[0][:REASON_CHARS]

    @property
    def note(self) -> str:
        """Which checks failed, and which entry explained each (:func:`checklist.note`)."""
        run = self.telling or self.runs[-1]
        return note(self.outcome, run.checks)

    @property
    def said(self) -> str:
        """The checks' note and the reason, as the history and the report's pages give them."""
        return f"{self.note} — {self.reason}" if self.note else self.reason

    def line(self, width: int) -> str:
        totals = [r.phases["total"] for r in self.runs if "total" in r.phases]
        time = f"{sorted(totals)[len(totals) // 2]:6.1f}s" if totals else "      -"
        count = f"  {self.passed}/{len(self.runs)} passed" if len(self.runs) > 1 else ""
        if self.outcome == "flaky":
            seen = Counter(r.outcome for r in self.runs)
            count += " (" + ", ".join(f"{n} {o}" for o, n in seen.most_common()) + ")"
        checks = f"  [{self.note}]" if self.note else ""
        reason = f"  {self.reason}" if self.reason else ""
        return f"  {_LABEL[self.outcome]:6} {self.cell:{width}} {time}{count}{checks}{reason}"

    def log(self, reports: Path | None = None) -> Path | None:
        """The harness log of the run that went wrong (the most telling one when several did),
        if it was kept: ``<reports>/runs/<cell>/harness.log``; None for a cell that passed."""
        wrong = [r for r in self.runs if r.outcome in _WENT_WRONG]
        if not wrong:
            return None
        telling = self.telling
        run = telling if telling is not None and telling in wrong else wrong[0]
        path = evidence_dir(self.cell, run.attempt, reports) / LOG_NAME
        return path if path.is_file() else None


_WENT_WRONG = ("failed", "broken")
"""The outcomes whose summary line says where the run's harness log is."""


_UNEXPLAINED = "unexplained: "
"""How :func:`harness.checks.verdict.judge` starts a failed cell's reason."""


def by_cell(outcomes: list[CellOutcome]) -> list[CellRuns]:
    """Runs grouped per cell, in first-seen order."""
    grouped: dict[str, list[CellOutcome]] = {}
    for o in outcomes:
        grouped.setdefault(o.cell, []).append(o)
    return [CellRuns(cell, tuple(runs)) for cell, runs in grouped.items()]


def flaky_cells(outcomes: list[CellOutcome]) -> set[str]:
    return {c.cell for c in by_cell(outcomes) if c.outcome == "flaky"}


def summary_lines(outcomes: list[CellOutcome], reports: Path | None = None) -> list[str]:
    """The summary; ``reports``: where the cells' evidence is (``reports_root()`` by default),
    for the harness log of each cell that went wrong."""
    cells = by_cell(outcomes)
    counts = Counter(c.outcome for c in cells)
    head = ", ".join(f"{counts.get(k, 0)} {k}" for k in OUTCOMES)
    runs = f" ({len(outcomes)} runs)" if len(outcomes) > len(cells) else ""
    lines = [f"goldmig: {len(cells)} cells{runs}: {head}"]
    width = max((len(c.cell) for c in cells), default=10)
    for c in sorted(cells, key=lambda c: (OUTCOMES.index(c.outcome), c.cell)):
        lines.append(c.line(width))
        if (log := c.log(reports)) is not None:
            lines.append(f"  {'':6} log: {_shown(log)}")
    if counts.get("fixed") or counts.get("known") or counts.get("flaky"):
        lines.append("  (known = declared in matrix.yaml known_failures; FIXED? = a known failure "
                     "that now passes: review and remove its entry; FLAKY = the outcome changed "
                     "between runs; [...] = the checks that failed or were not measured, and the "
                     "entry (its first cell glob) that explained each)")
    measured_line = checks_measured(outcomes)
    if measured_line:
        lines.append(measured_line)
    return lines


def _shown(path: Path) -> str:
    """``path`` from the current directory when it is under it (``reports/runs/...`` from the
    checkout), else as it is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def checks_measured(outcomes: list[CellOutcome]) -> str:
    """How many checks measured something (passed or failed) per run, by the run's outcome: a
    known cell that measures far fewer checks than a passing one hides what its failure cost."""
    per: dict[str, list[int]] = {}
    for o in outcomes:
        if o.checks:
            per.setdefault(o.outcome, []).append(measured(o.checks))
    if not per:
        return ""
    unit = "run" if len({o.cell for o in outcomes}) < len(outcomes) else "cell"  # --repeat: each run
    parts = [f"{outcome} {_number(median(counts))} ({len(counts)} {unit}{'' if len(counts) == 1 else 's'})"
             for outcome in OUTCOMES if (counts := per.get(outcome))]
    return f"checks measured (passed or failed) per {unit}, median: " + ", ".join(parts)


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def write_cells_json(path: Path, outcomes: list[CellOutcome]) -> None:
    """Written whole or not at all (a crash or a full disk never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    try:
        partial.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def read_cells_json(path: Path) -> list[CellOutcome]:
    """cells.json of this or an older goldmig (older files lack ``checks``; a key this version
    does not know is ignored)."""
    known = {f.name for f in fields(CellOutcome)}
    return [CellOutcome(**{k: v for k, v in item.items() if k in known})
            for item in json.loads(path.read_text())]
