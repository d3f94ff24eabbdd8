"""baseline: boot the golden guest on the source, migrate it once, observe it on the destination.

Variants are the guest's state at the moment of migration, because it decides
which QEMU paths run: ``idle`` (CPUs ceded to the hypervisor between their
timer ticks, what a real guest does most of the time), ``busy`` (every CPU
spinning), ``timer`` (every CPU re-arming a 1 ms timer, so a decrementer
interrupt is always imminent or pending when the source stops). A
destination that does not re-arm the decrementer (QEMU 7.2 and older under
TCG) leaves every CPU without timer interrupts in all three, except, in
``busy``, a CPU that the source stopped on the entry of a decrementer
interrupt: QEMU delivers an interrupt that came due before it honours the
stop, the guest's handler then runs on the destination and rewrites the
decrementer, which arms it (about 40 % of the CPUs in our busy runs, on a
loaded 2-core host). The matrix's virtio-rng is read before and after (device traffic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.checks.generic import Observations
from harness.guest.protocol import LoadMode
from harness.scenarios.declare import Scenario, Variant
from harness.scenarios.steps import boot, hop, observe, start_pair

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext


def run(ctx: ScenarioContext, variant: Variant[LoadMode]) -> Observations:
    src, dst = start_pair(ctx)
    before = boot(ctx, src, variant.data, devices=True)
    there = hop(ctx, src, dst, before)
    return observe(ctx, src, dst, before, [there])


SCENARIO: Scenario[LoadMode] = Scenario(
    name="baseline",
    description="one live migration of the golden guest; every generic check on the destination",
    run=run,
    variants=(
        Variant("idle", "idle", description="CPUs ceded between 250 ms ticks"),
        Variant("busy", "busy", description="every CPU spinning"),
        Variant("timer", "timer", description="every CPU re-arming a 1 ms timer"),
    ),
)
