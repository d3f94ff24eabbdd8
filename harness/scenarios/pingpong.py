"""pingpong: migrate source to destination and back to a fresh QEMU of the source's build."""

from __future__ import annotations

from harness.checks import Observations
from harness.scenarios.context import ScenarioContext
from harness.scenarios.steps import boot, hop, observe


def run(ctx: ScenarioContext) -> Observations:
    before = boot(ctx)
    there = hop(ctx, ctx.src, ctx.dst, before)
    back = ctx.start_return()
    home = hop(ctx, ctx.dst, back, before)
    # Each hop stops the guest once; the watcher's largest gap is one of them.
    return observe(ctx, ctx.dst, back, before, max(there.downtime_ms, home.downtime_ms))
