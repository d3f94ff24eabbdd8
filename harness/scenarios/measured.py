"""One migration whose scenario-specific checks are measured before the generic tick check can
end the cell (the pattern of intc.py, shared by phb and xiveblocks).

Right after the migration: every CPU's next tick (waited for, not yet
judged), then the scenario reads what it needs from QEMU and the guest, then,
if no CPU stalled, the generic observations. A known timer failure of a build
(matrix.yaml) then never hides the scenario's own finding: its checks come
first, and the tick check follows them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks import CheckResult, Limits, Observations, TickGap, generic_checks, ticks_on_schedule
from harness.errors import GuestUnresponsive
from harness.guest.agent import Agent
from harness.guest.protocol import Probe
from harness.scenarios.steps import Before, Hop, observe, tick_gaps

if TYPE_CHECKING:
    from harness.context import ScenarioContext
    from harness.migration.run import MigrationResult
    from harness.qemu.process import QemuProcess

PROBE_STALLED_S = 3.0
"""How long a guest with a stalled CPU gets to answer a probe."""


@dataclass(frozen=True)
class Landed:
    """A completed migration and every CPU's first tick on the destination."""

    result: MigrationResult
    gaps: tuple[TickGap, ...]

    @property
    def stalled(self) -> bool:
        return any(g.first_after is None for g in self.gaps)


def land(ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, before: Before) -> Landed:
    """Migrate ``src`` to ``dst`` and wait for each CPU's next tick there (judged later)."""
    result = ctx.migrate(src, dst)
    with ctx.phase("check"):
        gaps = tick_gaps(Agent(src.console), Agent(dst.console), before.cpus, ctx.limits,
                         result.figures.downtime_ms)
    return Landed(result, gaps)


def probe_after(dst: QemuProcess, landed: Landed) -> Probe | None:
    """The destination's probe; None when a stalled guest does not answer it."""
    try:
        return Agent(dst.console, timeout=PROBE_STALLED_S if landed.stalled else 10.0).probe()
    except GuestUnresponsive:
        if not landed.stalled:
            raise
        return None


def the_rest(ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, before: Before,
             landed: Landed) -> Observations | None:
    """The generic observations, or None when a CPU stalled (the tick check then ends the cell)."""
    if landed.stalled:
        return None
    return observe(ctx, src, dst, before, [Hop(landed.result.figures, landed.gaps)])


def own_first(own: list[CheckResult], seen: Observations | None, landed: Landed, tb_freq: int,
              limits: Limits, without: Collection[str] = ()) -> list[CheckResult]:
    """The scenario's checks, then every generic check but ``without`` (only the tick check when a
    CPU stalled)."""
    if seen is None:
        return [*own, ticks_on_schedule(landed.gaps, landed.result.figures.downtime_ms, tb_freq,
                                        limits)]
    return [*own, *generic_checks(seen, limits, without)]
