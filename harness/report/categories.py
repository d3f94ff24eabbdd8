"""The report's categories (Allure 3 ``categories``): each cell in one, by its outcome label,
and failures grouped by what failed (the ``failure`` label written at the end of a run)."""

from __future__ import annotations

from typing import Any


def _by_outcome(name: str, outcome: str, grouped: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "matchers": {"labels": {"outcome": f"^{outcome}$"}},
                            "groupByMessage": False}
    if grouped:
        rule["groupBy"] = [{"label": "failure"}]
    return rule


CATEGORIES = [
    _by_outcome("Product failures: QEMU or the guest misbehaved", "failed", grouped=True),
    _by_outcome("Harness breaks: our bug or the environment", "broken", grouped=True),
    _by_outcome("Known failures now passing: review their matrix.yaml entry", "fixed", grouped=False),
    _by_outcome("Flaky cells: the outcome changed between runs", "flaky", grouped=False),
    _by_outcome("Known failures (declared in matrix.yaml)", "known", grouped=True),
    _by_outcome("Impossible cells (skipped)", "skipped", grouped=False),
]
"""In the order a nightly reader wants them; the first rule a result matches is its category."""
