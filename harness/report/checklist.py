"""A cell's checks as the reports carry them (:func:`harness.checks.verdict.checks_json`): plain dicts
with ``id``, ``verdict``, ``measured`` and, when something explained the check, ``explained_by``
(the known_failures entry's key) and ``entry`` (its first cell glob).

One place that reads them, for the summary, junit.xml, Allure, the history and the matrix page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

CheckDict = Mapping[str, str]
CheckStates = dict[str, tuple[str, str]]
"""Check id -> (verdict, explaining entry's key or ""), for the checks that failed or were not
measured: what the history keeps per cell."""

AGAINST = ("failed", "not measured")
"""Verdicts that keep a cell from passing unless an entry explains them."""
MEASURED = ("passed", "failed")


def counts_against(check: CheckDict) -> bool:
    return check.get("verdict") in AGAINST


def unexplained(checks: Iterable[CheckDict]) -> list[CheckDict]:
    return [c for c in checks if counts_against(c) and not c.get("explained_by")]


def explained(checks: Iterable[CheckDict]) -> list[CheckDict]:
    return [c for c in checks if counts_against(c) and c.get("explained_by")]


def measured(checks: Iterable[CheckDict]) -> int:
    """How many checks measured something (passed or failed)."""
    return sum(c.get("verdict") in MEASURED for c in checks)


def states(checks: Iterable[CheckDict]) -> CheckStates:
    """The failed and not measured checks by id, with the entry that explained each."""
    return {str(c["id"]): (str(c["verdict"]), str(c.get("explained_by", ""))) for c in checks
            if counts_against(c) and "id" in c}


def _shown(check: CheckDict) -> str:
    """``id`` for a failed check, ``id (not measured)`` (with its cause) for one not measured."""
    if check.get("verdict") == "not measured":
        cause = check.get("cause")
        return f"{check['id']} (not measured{', after ' + cause if cause else ''})"
    return str(check["id"])


def unexplained_note(checks: Sequence[CheckDict]) -> str:
    """``unexplained: a, b (not measured, after a)``; empty when every check is explained."""
    bad = unexplained(checks)
    return "unexplained: " + ", ".join(_shown(c) for c in bad) if bad else ""


def known_note(checks: Sequence[CheckDict]) -> str:
    """Each explained check and the entry that explained it, grouped by entry:
    ``timer-ticks-on-schedule, guest-answers (not measured) by *>qemu-7.2/*/baseline-idle``."""
    by_entry: dict[str, list[str]] = {}
    for c in explained(checks):
        by_entry.setdefault(str(c.get("entry") or c["explained_by"]), []).append(_shown(c))
    return "; ".join(f"{', '.join(ids)} by {entry}" for entry, ids in by_entry.items())


def note(outcome: str, checks: Sequence[CheckDict]) -> str:
    """What a cell's checks say beside its outcome: the unexplained ones for a failed or broken
    cell, the explained ones and their entries for a known one."""
    if outcome in ("failed", "broken", "flaky"):
        return unexplained_note(checks) or known_note(checks)
    if outcome == "known":
        return known_note(checks)
    return ""


def against(checks: Sequence[CheckDict]) -> list[dict[str, str]]:
    """The checks that failed or were not measured, as compact dicts (no ``measured``, which can
    be long): what an Allure result's ``checks`` label carries."""
    keep = ("id", "verdict", "cause", "explained_by", "entry")
    return [{k: str(c[k]) for k in keep if k in c} for c in checks if counts_against(c)]


def parse(text: str) -> list[dict[str, str]]:
    """Checks from JSON; anything else (an old or damaged value) is no checks."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [{str(k): str(v) for k, v in item.items()} for item in data
            if isinstance(item, dict) and "id" in item]
