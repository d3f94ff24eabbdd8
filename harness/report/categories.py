"""The report's categories (Allure 3 ``categories``): each cell in one, by its outcome and the
check that failed.

Allure puts a result in the first category whose rule it matches, so a cell is listed once,
under its ``failure`` label (written at the end of a run, :attr:`RunResult.failure`): its first
unexplained failed check (``Failed check: <id>``), else its first unexplained check not
measured (``Not measured: <id>``), else for a known cell its first explained check (``Known:
<id>``, grouped by the entry that explained it). The per-check categories are made from the
checks the reported results carry, the most frequent first; results without checks (older
runs, or cells that ended before any check) fall through to the categories by outcome.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from harness.report.results import CellResult

PREFIXES = ("Failed check", "Not measured", "Known")
"""The per-check categories, in the order a nightly reader wants them."""


def _by_outcome(name: str, outcome: str, grouped: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "matchers": {"labels": {"outcome": f"^{outcome}$"}},
                            "groupByMessage": False}
    if grouped:
        rule["groupBy"] = [{"label": "failure"}]
    return rule


def _by_check(failure: str, outcome: str) -> dict[str, Any]:
    """A category of the cells whose ``failure`` label is ``failure`` (e.g. ``Failed check:
    timer-ticks-on-schedule``), grouped by scenario, or for known cells by explaining entry."""
    return {"name": failure, "matchers": {"labels": {"outcome": f"^{outcome}$",
                                                     "failure": f"^{re.escape(failure)}$"}},
            "groupBy": [{"label": "entry" if outcome == "known" else "scenario"}], "groupByMessage": False}


FAILED = _by_outcome("Product failures: QEMU or the guest misbehaved", "failed", grouped=True)
BROKEN = _by_outcome("Harness breaks: our bug or the environment", "broken", grouped=True)
FIXED = _by_outcome("Known failures now passing: review their matrix.yaml entry", "fixed", grouped=False)
FLAKY = _by_outcome("Flaky cells: the outcome changed between runs", "flaky", grouped=False)
KNOWN = _by_outcome("Known failures (declared in matrix.yaml)", "known", grouped=True)
SKIPPED = _by_outcome("Impossible cells (skipped)", "skipped", grouped=False)

CATEGORIES = [FAILED, BROKEN, FIXED, FLAKY, KNOWN, SKIPPED]
"""By outcome only, in the order a nightly reader wants them; the first rule a result matches
is its category."""


def categories(cells: Iterable[CellResult]) -> list[dict[str, Any]]:
    """The report's categories: one per failed, not measured and known check among ``cells``'
    results (the most frequent first within each kind), before the categories by outcome."""
    seen: Counter[tuple[str, str]] = Counter()
    for cell in cells:
        for run in cell.runs:
            if run.failure.startswith(PREFIXES) and run.outcome in ("failed", "known"):
                seen[(run.failure, run.outcome)] += 1
    ordered = sorted(seen, key=lambda k: (PREFIXES.index(k[0].split(":", 1)[0]), -seen[k], k[0]))
    failed = [_by_check(f, o) for f, o in ordered if o == "failed"]
    known = [_by_check(f, o) for f, o in ordered if o == "known"]
    return [*failed, FAILED, BROKEN, FIXED, FLAKY, *known, KNOWN, SKIPPED]
