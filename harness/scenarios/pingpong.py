"""pingpong: migrate source to destination and back to a fresh QEMU of the source's build.

The way back is where a build that can send what it cannot load (or load what
it cannot send) shows; every CPU's ticks are checked on schedule after each hop,
and the way back is taken whatever the guest did after the first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.checks.generic import Observations
from harness.scenarios.declare import Scenario, single
from harness.scenarios.steps import boot, hop, observe, start_pair

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.scenarios.declare import Variant


def run(ctx: ScenarioContext, variant: Variant[None]) -> Observations:
    src, dst = start_pair(ctx)
    before = boot(ctx, src)
    there = hop(ctx, src, dst, before)
    back = ctx.start("back")
    home = hop(ctx, dst, back, before, there)
    return observe(ctx, dst, back, before, [there, home])


SCENARIO = Scenario(
    name="pingpong",
    description="source to destination and back to a fresh QEMU of the source's build",
    run=run,
    variants=single(),
)
