"""example: a scenario whose two variants start the machine differently (ic-mode xics, xive).

Shipped as a test fixture: tests/scenarios/test_seam.py puts it on the path as
``harness/scenarios/example.py`` (outside the repository's package) to show
that a new scenario is one module and a matrix entry, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import Observations, generic_checks
from harness.checks.result import CheckResult, Limits
from harness.scenarios.declare import MachineChange, Needs, Scenario, Variant
from harness.scenarios.steps import boot, hop, observe

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext


@dataclass(frozen=True)
class ExampleObservations:
    expected_intc: str
    seen: Observations

    def checks(self, limits: Limits) -> list[CheckResult]:
        own = CheckResult("guest uses the variant's interrupt controller",
                          self.seen.probe_after.intc == self.expected_intc, self.expected_intc,
                          self.seen.probe_after.intc, "/proc/interrupts on the destination")
        return [*generic_checks(self.seen, limits, without={"IPIs delivered between every pair of CPUs"}),
                own]


def run(ctx: ScenarioContext, variant: Variant[str]) -> ExampleObservations:
    src, dst = ctx.start("src"), ctx.start("dst")
    before = boot(ctx, src)
    return ExampleObservations(variant.data, observe(ctx, src, dst, before, [hop(ctx, src, dst, before)]))


SCENARIO = Scenario(
    name="example",
    description="two variants with different machine options",
    run=run,
    variants=(
        Variant("xics", "XICS", source=MachineChange(properties=(("ic-mode", "xics"),))),
        Variant("xive", "XIVE", source=MachineChange(properties=(("ic-mode", "xive"),)),
                needs=Needs(min_machine=(4, 0))),  # older machine types are XICS only
    ),
    needs=Needs(machine_properties=("ic-mode",)),
)
