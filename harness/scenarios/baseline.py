"""baseline: boot the golden guest on the source, migrate it once, observe it on the destination."""

from __future__ import annotations

from harness.checks import Observations
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, Tick
from harness.migration.run import migrate
from harness.scenarios.context import ScenarioContext


def run(ctx: ScenarioContext) -> Observations:
    source = Agent(ctx.src.console)
    with ctx.phase("boot"):
        ctx.src.monitor.cmd("cont")
        source.hello(ctx.timeouts.boot_s)
        source.beat_after(Busy, 0, ctx.timeouts.beat_s)
        source.beat_after(Tick, 0, ctx.timeouts.beat_s)
    with ctx.phase("check"):
        probe_before = source.probe()
        source.tbreset()
        busy_before = source.latest(Busy)
        tick_before = source.latest(Tick)
        assert busy_before is not None and tick_before is not None
    with ctx.phase("migrate"):
        ctx.migration = migrate(ctx.src, ctx.dst, ctx.rundir, timeout=ctx.timeouts.migrate_s,
                                record=ctx.record_stream)
    destination = Agent(ctx.dst.console)
    with ctx.phase("check"):
        busy_after = destination.beat_after(Busy, busy_before.n, ctx.timeouts.beat_s)
        tick_after = destination.beat_after(Tick, tick_before.n, ctx.timeouts.beat_s)
        timebase = destination.tbstats()
        probe_after = destination.probe()
        return Observations(
            probe_before=probe_before,
            probe_after=probe_after,
            timebase=timebase,
            figures=ctx.migration.figures,
            source_status=ctx.src.monitor.cmd("query-status")["status"],
            destination_status=ctx.dst.monitor.cmd("query-status")["status"],
            busy_before=busy_before,
            busy_after=busy_after,
            tick_before=tick_before,
            tick_after=tick_after,
        )
