"""A run's Allure results read back as cells: outcome, short reason, what failed, Allure page.

The outcome of a result is goldmig's own, from its ``verdict`` label (written
by the plugin as the test ends), with its failed and not measured checks and
the entries that explained them from its ``checks`` label. Results written
before those labels are read from how the plugin reported them: a known
failure is an xfail whose reason starts ``known failure:``, a fixed one a
failure that says ``known failure now passes``. Several results of one cell (``--repeat``) make one
cell whose outcome is *flaky* when they differ; its Allure page is that of
the latest result, which Allure shows with the others as retries.

Outcomes, their order and the rule that makes a cell flaky are the run
summary's (:mod:`harness.report.run_summary`): the report counts what the
summary counts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.checklist import explained, note, parse, unexplained
from harness.report.run_summary import OUTCOMES, CellOutcome, CellRuns

VERDICT_LABEL = "verdict"
"""An Allure result's label with goldmig's outcome of the cell (passed, failed, known, ...)."""
CHECKS_LABEL = "checks"
"""An Allure result's label with its failed and not measured checks (JSON, :func:`checklist.against`)."""
RUN_FILE = "goldmig-run.json"
"""In a results directory: which run wrote it (for the history and the report)."""
KNOWN_PREFIX = "XFAIL known failure: "
FIXED_MARK = "known failure now passes"
LOAD_REFUSED = re.compile(r"too new for local version_id|unsupported version \d+ for|error while loading "
                          r"state|load of migration failed|Unknown savevm section|Missing section footer")
"""What a destination QEMU says when it refuses the incoming stream."""
_KINDS = {
    "MigrationFailed": "migration failed",
    "MigrationTimeout": "migration timed out",
    "QemuCrashed": "QEMU crashed",
    "QemuUnresponsive": "QEMU stopped answering",
    "QmpCommandError": "QEMU refused a QMP command",
    "GuestUnresponsive": "guest unresponsive",
}
_ERROR = re.compile(r"^(?:[\w.]+\.)?(?P<type>\w+): (?P<text>.*)$", re.S)
_UNTITLED = re.compile(r"^\w+\[(?P<cell>.+?)(?:#\d+)?\]$")
"""allure-pytest's name of a cell's test whose title goldmig never set (it broke in setup, before
the cell was labelled): ``test_cell[<cell id>]``, ``[<cell id>#<run>]`` with ``--repeat``."""


class ReportError(HarnessError):
    """A report cannot be built: names the file or directory and what to do."""


@dataclass(frozen=True)
class CellId:
    """The parts of a cell id, ``[driver:]source>destination/machine/scenario[-variant]``; a
    cell of another driver than the direct one has its own scenario, ``scenario (driver)``,
    so the matrix view grids each driver apart."""

    src: str
    dst: str
    machine: str
    scenario: str

    @classmethod
    def parse(cls, cell: str) -> CellId:
        pair, machine, scenario = (cell.split("/", 2) + ["", ""])[:3]
        driver, _, pair = pair.rpartition(":")
        src, _, dst = pair.partition(">")
        return cls(src, dst, machine, f"{scenario} ({driver})" if driver else scenario)


@dataclass(frozen=True)
class RunResult:
    """One Allure result of a cell."""

    cell: str
    outcome: str
    reason: str
    failure: str
    """What failed, for grouping: its first unexplained check (``Failed check: <id>``, ``Not
    measured: <id>``), its first explained one (``Known: <id>``), or for results without checks
    ``stream refused on load``, ``invariant: ...``; empty if nothing."""
    report_id: str
    """The result's id in the Allure 3 report: its page is ``index.html#/<report_id>``."""
    stop: int
    status: str = "unknown"
    """Allure's status (what its overview ring counts): a known cell is ``skipped``."""
    checks: tuple[dict[str, str], ...] = ()
    """Its failed and not measured checks (empty for results written before they were kept)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        details = data.get("statusDetails") or {}
        message = str(details.get("message") or "")
        status = str(data.get("status", "unknown"))
        labels = {str(x.get("name")): str(x.get("value", "")) for x in data.get("labels") or []
                  if isinstance(x, dict)}
        outcome = labels.get(VERDICT_LABEL, "")
        if outcome not in OUTCOMES or outcome == "flaky":
            outcome = outcome_of(status, message)
        checks = tuple(parse(labels[CHECKS_LABEL])) if CHECKS_LABEL in labels else ()
        reason = short_reason(outcome, message)
        said = note(outcome, checks)
        name = str(data.get("name", ""))
        untitled = _UNTITLED.match(name)
        return cls(
            cell=untitled["cell"] if untitled else name,
            outcome=outcome,
            reason=f"{said} — {reason}" if said else reason,
            failure=check_failure(outcome, checks) or failure_kind(outcome, message),
            report_id=hashlib.md5(str(data.get("uuid", "")).encode()).hexdigest(),
            stop=int(data.get("stop") or 0),
            status=status,
            checks=checks,
        )

    @property
    def entry(self) -> str:
        """The first cell glob and key of the entry that explained its first explained check."""
        first = explained(self.checks)
        return f"{first[0].get('entry', '')} [{first[0]['explained_by']}]" if first else ""


@dataclass(frozen=True)
class CellResult:
    """Every result of one cell, as the report shows it."""

    cell: str
    runs: tuple[RunResult, ...]
    """Oldest first."""

    @property
    def latest(self) -> RunResult:
        return self.runs[-1]

    @property
    def outcome(self) -> str:
        """goldmig's outcome of the cell, by the run summary's rule: its runs' outcome, or flaky."""
        return CellRuns(self.cell, summary_outcomes([self])).outcome

    @property
    def reason(self) -> str:
        if self.outcome != "flaky":
            return self.latest.reason
        counts = ", ".join(f"{sum(r.outcome == o for r in self.runs)} {o}"
                           for o in sorted({r.outcome for r in self.runs}))
        first_bad = next((r.reason for r in self.runs if r.reason), "")
        return f"{counts} of {len(self.runs)} runs" + (f"; {first_bad}" if first_bad else "")

    @property
    def id(self) -> CellId:
        return CellId.parse(self.cell)


def summary_outcomes(cells: Iterable[CellResult]) -> tuple[CellOutcome, ...]:
    """Every result of ``cells`` as the run's summary takes a run (its cell and outcome), oldest
    first: what :func:`harness.report.run_summary.summary_lines` counts."""
    return tuple(CellOutcome(c.cell, r.outcome) for c in cells for r in c.runs)


def outcome_of(status: str, message: str) -> str:
    """goldmig's outcome of one Allure result, from its status and message."""
    if status == "passed":
        return "passed"
    if status == "skipped":
        return "known" if message.startswith(KNOWN_PREFIX) else "skipped"
    if status == "failed":
        return "fixed" if FIXED_MARK in message else "failed"
    return "broken"


def short_reason(outcome: str, message: str) -> str:
    """The first line a reader needs: the known failure's reason, the skip reason, or the error."""
    if outcome == "known":
        return message.removeprefix(KNOWN_PREFIX).split("\n\n", 1)[0].strip()
    if outcome == "skipped":
        return message.removeprefix("Skipped: ").splitlines()[0] if message else ""
    first = message.splitlines()[0] if message else ""
    match = _ERROR.match(first)
    return f"{match['type']}: {match['text']}" if match else first


def check_failure(outcome: str, checks: tuple[dict[str, str], ...]) -> str:
    """The check a cell's category is named after: its first unexplained failed check, else its
    first unexplained one not measured, else (known) its first explained one."""
    if outcome in ("passed", "skipped", "fixed") or not checks:
        return ""
    bad = unexplained(checks)
    for verdict, prefix in (("failed", "Failed check"), ("not measured", "Not measured")):
        first = next((c for c in bad if c.get("verdict") == verdict), None)
        if first is not None:
            return f"{prefix}: {first['id']}"
    first_known = next(iter(explained(checks)), None)
    return f"Known: {first_known['id']}" if first_known is not None else ""


def failure_kind(outcome: str, message: str) -> str:
    """What failed, in a few words: the category group of a failed, known or broken cell."""
    if outcome in ("passed", "skipped"):
        return ""
    if outcome == "fixed":
        return "known failure now passes"
    error = message.split("\n\n", 1)[1] if outcome == "known" and "\n\n" in message else message
    match = _ERROR.match(error.strip())
    if match is None:
        return "unexplained"
    kind, text = match["type"], match["text"]
    if kind == "CheckFailed":
        return f"invariant: {text.partition(': before=')[0]}"
    if kind == "MigrationFailed" and LOAD_REFUSED.search(text):
        return "stream refused on load"
    if outcome == "broken":
        return f"harness: {kind}"
    return _KINDS.get(kind, kind)


def result_files(directory: Path) -> list[Path]:
    """The ``*-result.json`` files of a results directory; an error names a directory that is
    missing or holds none."""
    if not directory.is_dir():
        raise ReportError(f"{directory}: no such results directory (run `goldmig run` first, or "
                          "name the allure-results directories to report)")
    files = sorted(directory.glob("*-result.json"))
    if not files:
        raise ReportError(f"{directory}: no Allure results (*-result.json) in it; run `goldmig run` "
                          "or name a directory that has them")
    return files


def read_cells(directories: list[Path]) -> list[CellResult]:
    """Every cell in the results directories (merged), in cell id order."""
    runs: dict[str, list[RunResult]] = {}
    for directory in directories:
        for path in result_files(directory):
            try:
                result = RunResult.from_json(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                raise ReportError(f"{path}: not a readable Allure result ({exc}); remove it or "
                                  "run again") from exc
            runs.setdefault(result.cell, []).append(result)
    return [CellResult(cell, tuple(sorted(rs, key=lambda r: r.stop))) for cell, rs in sorted(runs.items())]
