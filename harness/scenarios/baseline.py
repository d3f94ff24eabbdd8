"""baseline: boot the golden guest on the source, migrate it once, observe it on the destination."""

from __future__ import annotations

from harness.checks import Observations
from harness.scenarios.context import ScenarioContext
from harness.scenarios.steps import boot, hop, observe


def run(ctx: ScenarioContext) -> Observations:
    before = boot(ctx)
    figures = hop(ctx, ctx.src, ctx.dst, before)
    return observe(ctx, ctx.src, ctx.dst, before, figures.downtime_ms)
