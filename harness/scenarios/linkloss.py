"""linkloss: the link dies in the middle of a migration; the source must carry on.

The migration is slowed (max-bandwidth) so that it is still running when the
transport's link is cut after a few megabytes. QEMU must report the migration
failed (or let it be cancelled once it stops making progress), and the guest
must keep running on the source, every CPU still ticking and making progress,
with its timebase intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks import CheckResult, Limits
from harness.errors import MigrationFailed, MigrationTimeout
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, TbStats, Tick
from harness.scenarios.declare import Scenario, single
from harness.scenarios.steps import boot

if TYPE_CHECKING:
    from harness.context import ScenarioContext
    from harness.scenarios.declare import Variant

BANDWIDTH = 8 << 20  # bytes/s: a 512 MB guest's ~50 MB stream takes ~6 s
CUT_AFTER = 8 << 20  # bytes sent before the link goes down
STALL_S = 15.0  # how long a stalled migration may hang before it is cancelled


@dataclass(frozen=True)
class LinkLossObservations:
    migration_outcome: str
    source_status: str
    destination_running: bool
    ticks_after: dict[int, int | None]
    """Per CPU: the first tick number seen on the source after the failure, None if none came."""
    busy_after: dict[int, int | None]
    timebase: TbStats | None

    def checks(self, limits: Limits) -> list[CheckResult]:
        tb = self.timebase
        backwards = {c.cpu: c.max_back for c in tb.cpus if c.max_back} if tb else None
        return [
            CheckResult("migration did not complete over a dead link",
                        not self.migration_outcome.startswith("completed"), "failed or cancelled",
                        self.migration_outcome, "QEMU's migration status after the cut"),
            CheckResult("source runs the guest again", self.source_status == "running", "running",
                        self.source_status, "query-status on source after the failed migration"),
            CheckResult("destination is not running", not self.destination_running, False,
                        self.destination_running, "query-status on destination"),
            CheckResult("timer interrupts on every CPU of the source",
                        None not in self.ticks_after.values(), "a new tick per CPU", self.ticks_after,
                        "first tick number per CPU after the migration failed"),
            CheckResult("CPU progress on every CPU of the source",
                        None not in self.busy_after.values(), "a busy beat per CPU", self.busy_after,
                        "first busy beat per CPU after the load was switched to busy"),
            CheckResult("timebase never goes backwards", backwards == {}, 0,
                        backwards if backwards is not None else "no answer",
                        "per-CPU watcher on the source since tbreset"),
        ]


def run(ctx: ScenarioContext, variant: Variant[None]) -> LinkLossObservations:
    src = ctx.start("src")
    dst = ctx.start("dst")
    before = boot(ctx, src)
    src.monitor.cmd("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH})
    try:
        ctx.migrate(src, dst, timeout=STALL_S, cut_after_bytes=CUT_AFTER)
        outcome = "completed"
    except (MigrationFailed, MigrationTimeout) as exc:
        outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    source = Agent(src.console)
    with ctx.phase("check"):
        ticks = {}
        for cpu in before.cpus:
            last = source.latest(Tick, cpu=cpu)
            tick = source.console.wait_for(
                Tick, lambda t, c=cpu, n=last.n if last else 0: t.cpu == c and t.n > n,  # type: ignore[misc]
                ctx.timeouts.beat_s)
            ticks[cpu] = tick.n if tick else None
        busy: dict[int, int | None] = {}
        if None not in ticks.values():
            source.set_load("busy")
            for cpu in before.cpus:
                beat = source.console.wait_for(Busy, lambda b, c=cpu: b.cpu == c,  # type: ignore[misc]
                                               ctx.timeouts.beat_s)
                busy[cpu] = beat.n if beat else None
        else:
            busy = dict.fromkeys(before.cpus)
        timebase = source.tbstats() if None not in busy.values() else None
        return LinkLossObservations(
            migration_outcome=outcome,
            source_status=src.monitor.cmd("query-status")["status"],
            destination_running=dst.alive() and dst.monitor.cmd("query-status")["status"] == "running",
            ticks_after=ticks,
            busy_after=busy,
            timebase=timebase,
        )


SCENARIO = Scenario(
    name="linkloss",
    description="the link dies mid-migration; the source must carry on",
    run=run,
    variants=single(),
)
