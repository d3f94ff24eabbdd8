"""Scenarios, one module each. A scenario drives a started QEMU pair and returns what it saw,
which knows the invariants that must hold for that scenario."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from harness.checks import CheckResult
from harness.scenarios import baseline, goldenload, linkloss, pingpong, vmstate
from harness.scenarios.context import ScenarioContext


class ScenarioResult(Protocol):
    def checks(self, tb_slack_ms: int) -> list[CheckResult]: ...


Scenario = Callable[[ScenarioContext], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "baseline": baseline.run,
    "pingpong": pingpong.run,
    "linkloss": linkloss.run,
    "goldenload": goldenload.run,
    "vmstate": vmstate.run,
}

NEEDS_LOCAL_BUILDS = frozenset({"goldenload", "vmstate"})
"""Scenarios that record reference streams or vmstate dumps with the builds on this machine."""
