"""One migration whose scenario-specific checks are measured first (the pattern of intc.py,
shared by phb and xiveblocks).

Right after the migration: every CPU's next tick (waited for, not yet
judged), then the scenario reads what it needs from QEMU and the guest, then
the generic observations, whether or not a CPU stalled (what the guest no
longer answers is not measured, with the stall as its cause).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import Observations, TickGap, generic_checks, missed_tick
from harness.checks.result import CheckResult, Limits
from harness.guest.agent import Agent
from harness.scenarios.steps import Before, Hop, observe, tick_gaps

if TYPE_CHECKING:
    from harness.migration.run import MigrationResult
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side

@dataclass(frozen=True)
class Landed:
    """A completed migration and every CPU's first tick on the destination."""

    result: MigrationResult
    gaps: tuple[TickGap, ...]

    @property
    def stalled(self) -> bool:
        return bool(missed_tick(self.gaps))


def land(ctx: ScenarioContext, src: Side, dst: Side, before: Before) -> Landed:
    """Migrate ``src`` to ``dst`` and wait for each CPU's next tick there (judged later)."""
    result = ctx.migrate(src, dst)
    with ctx.phase("check"):
        gaps = tick_gaps(Agent(src.console), Agent(dst.console), before.cpus, ctx.limits,
                         result.figures.downtime_ms, watch=ctx.hop_watch(dst))
    return Landed(result, gaps)


def the_rest(ctx: ScenarioContext, src: Side, dst: Side, before: Before,
             landed: Landed, silence: str = "") -> Observations:
    """The generic observations after the scenario's own (``silence``: what those left
    unanswered, see :func:`~harness.scenarios.steps.observe`)."""
    return observe(ctx, src, dst, before, [Hop(landed.result.figures, landed.gaps, landed.result.stream)],
                   silence=silence)


def own_first(own: list[CheckResult], seen: Observations, limits: Limits,
              without: Collection[str] = ()) -> list[CheckResult]:
    """The scenario's checks, then every generic check but ``without``."""
    return [*own, *generic_checks(seen, limits, without)]
