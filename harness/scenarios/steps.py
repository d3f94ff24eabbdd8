"""Steps scenarios are made of: boot and settle the guest, one migration hop, observe afterwards.

Timer interrupts are checked on schedule, not eventually: right after each
hop the harness waits, without sending the guest anything (console input is
an interrupt that can wake a stalled CPU and hide the stall), for every CPU's
next tick, and gives up a second after the bound. A CPU whose tick does not
come fails the cell there and then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks import (
    CheckResult,
    Limits,
    Observations,
    Progress,
    TickGap,
    require_all,
    ticks_on_schedule,
)
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, LoadMode, Probe, TbStats, Tick, parse_cpu_list

if TYPE_CHECKING:
    from harness.context import ScenarioContext
    from harness.migration.run import MigrationFigures
    from harness.qemu.process import QemuProcess

LATE_MARGIN_S = 1.0
"""How long past the tick-gap bound the harness keeps waiting before it calls a CPU stalled."""


@dataclass(frozen=True)
class Before:
    """The guest as seen on the source just before the first migration."""

    probe: Probe
    load: LoadMode
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class Hop:
    """One migration and every CPU's ticks across it."""

    figures: MigrationFigures
    gaps: tuple[TickGap, ...]


def boot(ctx: ScenarioContext, src: QemuProcess, load: LoadMode = "idle") -> Before:
    """Run the paused source until every CPU ticks, put the guest in ``load``, probe, reset the
    watchers."""
    agent = Agent(src.console)
    with ctx.phase("boot"):
        src.monitor.cmd("cont")
        cpus = parse_cpu_list(agent.hello(ctx.timeouts.boot_s).cpus)
        for cpu in cpus:
            agent.beat_after(Tick, 0, ctx.timeouts.beat_s, cpu=cpu)
    with ctx.phase("check"):
        agent.set_load(load)
        if load == "busy":
            for cpu in cpus:
                agent.beat_after(Busy, 0, ctx.timeouts.beat_s, cpu=cpu)
        probe = agent.probe()
        agent.tbreset()
    return Before(probe, load, cpus)


def hop(ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, before: Before) -> Hop:
    """Migrate ``src`` to ``dst``, then wait for every CPU's next tick on ``dst``; a CPU whose
    tick is late past the bound fails the cell now (CheckFailed), with every CPU's gap."""
    result = ctx.migrate(src, dst)
    with ctx.phase("check"):
        gaps = tick_gaps(Agent(src.console), Agent(dst.console), before.cpus,
                         ctx.limits, result.figures.downtime_ms)
    if any(g.first_after is None for g in gaps):
        require_all([ticks_on_schedule(gaps, result.figures.downtime_ms, before.probe.tb_freq,
                                       ctx.limits)])
    return Hop(result.figures, gaps)


def tick_gaps(source: Agent, destination: Agent, cpus: tuple[int, ...], limits: Limits,
              downtime_ms: int, earlier: tuple[TickGap, ...] = ()) -> tuple[TickGap, ...]:
    """Each CPU's last tick on the source and first on the destination, waiting at most the
    gap bound plus :data:`LATE_MARGIN_S` from now (the destination has just resumed).

    ``earlier`` is the previous hop's gaps, when the source was that hop's destination: a CPU
    that never ticked there keeps its last tick from before that hop."""
    resumed = time.monotonic()
    deadline = resumed + limits.gap_bound_ms(downtime_ms) / 1000 + LATE_MARGIN_S
    before = {g.cpu: g.last_before for g in earlier}
    gaps = []
    for cpu in cpus:
        last = source.latest(Tick, cpu=cpu) or before.get(cpu)
        if last is None:
            raise AssertionError(f"CPU {cpu} never ticked on the source")  # boot() waited for it
        first = destination.console.wait_for(
            Tick, lambda t, c=cpu, n=last.n: t.cpu == c and t.n > n,  # type: ignore[misc]
            max(0.0, deadline - time.monotonic()))
        waited = (time.monotonic() - resumed) * 1000
        gaps.append(TickGap(cpu, last, first, round(waited)))
    return tuple(gaps)


def observe(ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, before: Before,
            hops: list[Hop]) -> Observations:
    """What the guest saw, read on ``dst`` after the last hop from ``src``."""
    source, destination = Agent(src.console), Agent(dst.console)
    with ctx.phase("check"):
        busy_before = {cpu: _latest_busy(source, cpu) for cpu in before.cpus}
        if before.load != "busy":
            destination.set_load("busy")
        progress = []
        for cpu in before.cpus:
            beat = destination.console.wait_for(
                Busy, lambda b, c=cpu: b.cpu == c and b.n > busy_before[c],  # type: ignore[misc]
                ctx.timeouts.beat_s)
            progress.append(Progress(cpu, busy_before[cpu], beat.n if beat else None))
        return Observations(
            load=before.load,
            probe_before=before.probe,
            probe_after=destination.probe(),
            timebase=destination.tbstats(),
            downtime_ms=max(h.figures.downtime_ms for h in hops),
            source_status=src.monitor.cmd("query-status")["status"],
            destination_status=dst.monitor.cmd("query-status")["status"],
            tick_gaps=tuple(g for h in hops for g in h.gaps),
            progress=tuple(progress),
            ipi=destination.ipi(),
        )


@dataclass(frozen=True)
class CarriedOn:
    """The source after a migration that had to fail: the guest is still the source's."""

    ticks_after: dict[int, int | None]
    """Per CPU: the first tick number on the source after the failure, None if none came."""
    busy_after: dict[int, int | None]
    """Per CPU: the first busy beat once the load was switched to busy, None if none came."""
    timebase: TbStats | None
    """The source's per-CPU watchers since tbreset, None when not measured."""

    def checks(self) -> list[CheckResult]:
        tb = self.timebase
        backwards = {c.cpu: c.max_back for c in tb.cpus if c.max_back} if tb else None
        return [
            CheckResult("timer interrupts on every CPU of the source",
                        bool(self.ticks_after) and None not in self.ticks_after.values(),
                        "a new tick per CPU", self.ticks_after,
                        "first tick number per CPU after the migration failed"),
            CheckResult("CPU progress on every CPU of the source",
                        bool(self.busy_after) and None not in self.busy_after.values(),
                        "a busy beat per CPU", self.busy_after,
                        "first busy beat per CPU after the load was switched to busy"),
            CheckResult("timebase never goes backwards", backwards == {}, 0,
                        backwards if backwards is not None else "not measured",
                        "per-CPU watcher on the source since tbreset"),
        ]


def carried_on(ctx: ScenarioContext, src: QemuProcess, before: Before) -> CarriedOn:
    """After a failed migration: every CPU's next tick on the source, then (if all ticked) a busy
    beat per CPU, then (if all beat) the watchers' statistics."""
    source = Agent(src.console)
    ticks: dict[int, int | None] = dict.fromkeys(before.cpus)
    busy: dict[int, int | None] = dict.fromkeys(before.cpus)
    with ctx.phase("check"):
        for cpu in before.cpus:
            last = source.latest(Tick, cpu=cpu)
            tick = source.console.wait_for(
                Tick, lambda t, c=cpu, n=last.n if last else 0: t.cpu == c and t.n > n,  # type: ignore[misc]
                ctx.timeouts.beat_s)
            ticks[cpu] = tick.n if tick else None
        if None in ticks.values():
            return CarriedOn(ticks, busy, None)
        source.set_load("busy")
        for cpu in before.cpus:
            beat = source.console.wait_for(Busy, lambda b, c=cpu: b.cpu == c,  # type: ignore[misc]
                                           ctx.timeouts.beat_s)
            busy[cpu] = beat.n if beat else None
        return CarriedOn(ticks, busy, source.tbstats() if None not in busy.values() else None)


def _latest_busy(agent: Agent, cpu: int) -> int:
    beat = agent.latest(Busy, cpu=cpu)
    return beat.n if beat else 0
