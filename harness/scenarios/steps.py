"""Steps scenarios are made of: boot and observe, one migration hop, observe afterwards."""

from __future__ import annotations

from dataclasses import dataclass

from harness.checks import Observations
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, Probe, Tick
from harness.migration.run import MigrationFigures, migrate, stream_path
from harness.qemu.process import QemuProcess
from harness.scenarios.context import ScenarioContext


@dataclass(frozen=True)
class Before:
    """The guest as seen on the source just before the first migration."""

    probe: Probe
    busy: Busy
    tick: Tick


def boot(ctx: ScenarioContext) -> Before:
    """Run the paused source, wait for the agent and both heartbeats, probe, reset the watcher."""
    source = Agent(ctx.src.console)
    with ctx.phase("boot"):
        ctx.src.monitor.cmd("cont")
        source.hello(ctx.timeouts.boot_s)
        source.beat_after(Busy, 0, ctx.timeouts.beat_s)
        source.beat_after(Tick, 0, ctx.timeouts.beat_s)
    with ctx.phase("check"):
        probe = source.probe()
        source.tbreset()
        busy, tick = source.latest(Busy), source.latest(Tick)
        assert busy is not None and tick is not None
        return Before(probe, busy, tick)


def hop(ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, before: Before) -> MigrationFigures:
    """Migrate ``src`` to ``dst`` and wait until the guest beats there again."""
    with ctx.phase("migrate"):
        record = stream_path(ctx.rundir, src, dst) if ctx.record_stream else None
        result = migrate(src, dst, ctx.transport_to(dst), timeout=ctx.timeouts.migrate_s,
                         record=record)
    ctx.migrations.append(result)
    destination = Agent(dst.console)
    with ctx.phase("check"):
        destination.beat_after(Busy, before.busy.n, ctx.timeouts.beat_s)
        destination.beat_after(Tick, before.tick.n, ctx.timeouts.beat_s)
    return result.figures


def observe(ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, before: Before,
            downtime_ms: int) -> Observations:
    """What the guest saw, read on ``dst`` after the last hop from ``src``."""
    destination = Agent(dst.console)
    with ctx.phase("check"):
        busy_after = destination.beat_after(Busy, before.busy.n, ctx.timeouts.beat_s)
        tick_after = destination.beat_after(Tick, before.tick.n, ctx.timeouts.beat_s)
        return Observations(
            probe_before=before.probe,
            probe_after=destination.probe(),
            timebase=destination.tbstats(),
            downtime_ms=downtime_ms,
            source_status=src.monitor.cmd("query-status")["status"],
            destination_status=dst.monitor.cmd("query-status")["status"],
            busy_before=before.busy,
            busy_after=busy_after,
            tick_before=before.tick,
            tick_after=tick_after,
        )
