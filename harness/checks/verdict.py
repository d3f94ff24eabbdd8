"""A cell's verdict, judged check by check against the matrix's known failures.

A cell passes when every check passed or had nothing to measure. Each check
that failed or was not measured must be explained by a ``known_failures``
entry covering the cell and naming that check (its ``match`` found in that
check's message); a check not measured because another check failed is
explained with that check. The cell is KNOWN when every such check is
explained, FAILED when one is not (its first line names those), BROKEN when
the only unexplained checks could not be measured because the host starved
the guest, and FIXED when a steady entry covers the cell and all of its
checks were measured and passed (the entry no longer reproduces: review it).

A failure that ends a scenario before its checks (a refused migration, a
crashed QEMU, a silent guest) becomes a check of its own here, so an entry
explains it like any other (``migration-completes``, ``qemu-stays-up``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.checks.result import HOST_OVERLOADED, CheckResult, Verdict, not_measured
from harness.errors import (
    CheckFailed,
    GuestUnresponsive,
    MigrationFailed,
    MigrationTimeout,
    ProductFailure,
    QemuCrashed,
    QemuUnresponsive,
    QmpCommandError,
)
from harness.matrix.model import KnownFailure
from harness.migration.run import MigrationResult

FAILURE_CHECKS: dict[type[ProductFailure], str] = {
    MigrationFailed: "migration completes",
    MigrationTimeout: "migration completes",
    QemuCrashed: "QEMU stays up",
    QemuUnresponsive: "QEMU answers QMP",
    GuestUnresponsive: "guest answers",
    QmpCommandError: "QEMU accepts the scenario's QMP commands",
}
"""The check a failure that ends a scenario early stands for, by its type."""

REMAINING = "checks after the failure"
"""What a scenario that ended early did not measure."""


def failure_checks(exc: ProductFailure) -> list[CheckResult]:
    """The check ``exc`` failed, then the scenario's remaining checks as not measured because
    of it."""
    if isinstance(exc, CheckFailed):
        failed = CheckResult(exc.invariant, False, exc.before, exc.after, exc.evidence)
    else:
        name = next((n for t, n in FAILURE_CHECKS.items() if isinstance(exc, t)), "scenario completes")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        failed = CheckResult(name, False, "", first, f"{type(exc).__name__}: {exc}")
    return [failed, not_measured(REMAINING, f"the scenario ended at {failed.invariant!r}",
                                 cause=failed.id)]


def completed(migrations: Sequence[MigrationResult]) -> list[CheckResult]:
    """``migration completes`` as a passed check for the hops that completed (so an entry for a
    refused migration is seen not to reproduce), none when the scenario migrated nothing."""
    if not migrations:
        return []
    shown = ", ".join(f"{m.figures.status} in {m.figures.total_time_ms} ms" for m in migrations)
    return [CheckResult(FAILURE_CHECKS[MigrationFailed], True, "completed", shown,
                        "query-migrate on each hop's source")]


@dataclass(frozen=True)
class CheckVerdict:
    """One check and the entry that explains it (None: passed, not applicable, or unexplained)."""

    check: CheckResult
    explained_by: KnownFailure | None = None

    @property
    def unexplained(self) -> bool:
        return self.check.counts_against and self.explained_by is None


@dataclass(frozen=True)
class CellVerdict:
    outcome: str
    """passed, failed, known, fixed or broken."""
    reason: str
    checks: tuple[CheckVerdict, ...]
    fixed: tuple[KnownFailure, ...] = ()
    """Steady entries covering the cell whose checks all passed."""

    @property
    def entries(self) -> tuple[KnownFailure, ...]:
        """The entries that explained something, in first-use order."""
        seen: dict[int, KnownFailure] = {}
        for v in self.checks:
            if v.explained_by is not None:
                seen.setdefault(id(v.explained_by), v.explained_by)
        return tuple(seen.values())


def judge(checks: list[CheckResult], known: list[KnownFailure]) -> CellVerdict:
    """The cell's verdict from its checks and the known_failures entries that cover it."""
    explained: dict[str, KnownFailure] = {}
    verdicts = []
    for check in checks:
        entry = None
        if check.verdict is Verdict.FAILED or (check.verdict is Verdict.NOT_MEASURED and check.cause is None):
            entry = next((k for k in known if k.explains(check.id, check.message)), None)
        verdicts.append(CheckVerdict(check, entry))
        if entry is not None:
            explained.setdefault(check.id, entry)
    # a check not measured because of another takes that one's explanation
    verdicts = [CheckVerdict(v.check, explained.get(v.check.cause or ""))
                if v.check.verdict is Verdict.NOT_MEASURED and v.check.cause else v for v in verdicts]
    fixed = tuple(k for k in known if not k.intermittent and _reproduced_nothing(k, checks))
    unexplained = [v.check for v in verdicts if v.unexplained]
    product = [c for c in unexplained if c.cause != HOST_OVERLOADED]
    if product:
        return CellVerdict("failed", _unexplained_reason(product), tuple(verdicts), fixed)
    if unexplained:
        return CellVerdict("broken", "host overloaded: " + _unexplained_reason(unexplained),
                           tuple(verdicts), fixed)
    if fixed:
        return CellVerdict("fixed", "known failure now passes: " + "; ".join(k.reason for k in fixed),
                           tuple(verdicts), fixed)
    entries = CellVerdict("known", "", tuple(verdicts)).entries
    if entries:
        return CellVerdict("known", "; ".join(k.reason for k in entries), tuple(verdicts))
    return CellVerdict("passed", "", tuple(verdicts))


def _reproduced_nothing(entry: KnownFailure, checks: list[CheckResult]) -> bool:
    """Every check the entry names was measured in this cell, and passed (a cell that measured
    none of them, e.g. one that never completed a hop, says nothing about the entry: a stale
    entry is found at the end of the run instead)."""
    named = [c for c in checks if entry.names(c.id)]
    return bool(named) and all(c.verdict is Verdict.PASSED for c in named)


def _unexplained_reason(checks: list[CheckResult]) -> str:
    """First line: the unexplained checks by id; then the first one's message."""
    ids = ", ".join(dict.fromkeys(c.id for c in checks))
    first = checks[0]
    head = f"{first.verdict.value}" + (f" ({first.cause})" if first.cause else "")
    return f"unexplained: {ids}\n{head}: {first.message}"


def checks_json(verdict: CellVerdict) -> list[dict[str, str]]:
    """Each check as the summary, cells.json, history and junit.xml carry it: id, verdict, what it
    measured, and the entry that explained it (its key and first cell glob)."""
    out = []
    for v in verdict.checks:
        item = {"id": v.check.id, "name": v.check.invariant, "verdict": v.check.verdict.value,
                "measured": str(v.check.after)[:300]}
        if v.check.cause:
            item["cause"] = v.check.cause
        if v.explained_by is not None:
            item["explained_by"] = v.explained_by.key
            item["entry"] = v.explained_by.cells[0]
        out.append(item)
    return out
