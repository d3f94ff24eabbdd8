"""linkloss: the link dies in the middle of a migration; the source must carry on.

The migration is slowed (max-bandwidth) so that it is still running when the
transport's link is cut after a few megabytes. QEMU must report the migration
failed (or let it be cancelled once it stops making progress), and the guest
must keep running on the source with its timebase intact.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.checks import CheckResult
from harness.errors import MigrationFailed, MigrationTimeout
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, TbStats, Tick
from harness.migration.run import migrate, stream_path
from harness.scenarios.context import ScenarioContext
from harness.scenarios.steps import boot

BANDWIDTH = 8 << 20  # bytes/s: a 512 MB guest's ~50 MB stream takes ~6 s
CUT_AFTER = 8 << 20  # bytes sent before the link goes down
STALL_S = 15.0  # how long a stalled migration may hang before it is cancelled


@dataclass(frozen=True)
class LinkLossObservations:
    migration_outcome: str
    source_status: str
    destination_running: bool
    busy_at_failure: int
    busy_after: int | None
    tick_at_failure: int
    tick_after: int | None
    timebase: TbStats | None

    def checks(self, tb_slack_ms: int) -> list[CheckResult]:
        tb = self.timebase
        return [
            CheckResult("migration did not complete over a dead link",
                        not self.migration_outcome.startswith("completed"), "failed or cancelled",
                        self.migration_outcome, "QEMU's migration status after the cut"),
            CheckResult("source runs the guest again", self.source_status == "running", "running",
                        self.source_status, "query-status on source after the failed migration"),
            CheckResult("destination is not running", not self.destination_running, False,
                        self.destination_running, "query-status on destination"),
            CheckResult("CPU progress on the source (busy heartbeat advances)",
                        self.busy_after is not None, self.busy_at_failure, self.busy_after,
                        "busy beat numbers when the migration failed and after"),
            CheckResult("timer interrupts on the source (tick heartbeat advances)",
                        self.tick_after is not None, self.tick_at_failure, self.tick_after,
                        "tick beat numbers when the migration failed and after"),
            CheckResult("timebase never goes backwards", tb is not None and tb.max_back == 0, 0,
                        tb.max_back if tb else "no answer", "watcher on the source since tbreset"),
        ]


def run(ctx: ScenarioContext) -> LinkLossObservations:
    before = boot(ctx)
    ctx.src.monitor.cmd("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH})
    with ctx.phase("migrate"):
        try:
            record = stream_path(ctx.rundir, ctx.src, ctx.dst) if ctx.record_stream else None
            result = migrate(ctx.src, ctx.dst, ctx.transport_to(ctx.dst), timeout=STALL_S,
                             record=record, cut_after_bytes=CUT_AFTER)
            ctx.migrations.append(result)
            outcome = "completed"
        except (MigrationFailed, MigrationTimeout) as exc:
            outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    source = Agent(ctx.src.console)
    with ctx.phase("check"):
        busy_at_failure = source.latest(Busy) or before.busy
        tick_at_failure = source.latest(Tick) or before.tick
        busy = source.console.wait_for(Busy, lambda b: b.n > busy_at_failure.n, ctx.timeouts.beat_s)
        tick = source.console.wait_for(Tick, lambda t: t.n > tick_at_failure.n, ctx.timeouts.beat_s)
        timebase = source.tbstats() if busy else None
        dst_running = ctx.dst.alive() and _status(ctx, "dst") == "running"
        return LinkLossObservations(
            migration_outcome=outcome,
            source_status=_status(ctx, "src"),
            destination_running=dst_running,
            busy_at_failure=busy_at_failure.n,
            busy_after=busy.n if busy else None,
            tick_at_failure=tick_at_failure.n,
            tick_after=tick.n if tick else None,
            timebase=timebase,
        )


def _status(ctx: ScenarioContext, role: str) -> str:
    side = ctx.src if role == "src" else ctx.dst
    return str(side.monitor.cmd("query-status")["status"])
