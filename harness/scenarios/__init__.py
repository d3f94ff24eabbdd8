"""Scenarios, one module each. A scenario drives a started QEMU pair and returns observations."""

from __future__ import annotations

from collections.abc import Callable

from harness.checks import Observations
from harness.scenarios import baseline, pingpong
from harness.scenarios.context import ScenarioContext

Scenario = Callable[[ScenarioContext], Observations]

SCENARIOS: dict[str, Scenario] = {
    "baseline": baseline.run,
    "pingpong": pingpong.run,
}
