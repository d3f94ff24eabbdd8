"""Steps scenarios are made of: boot and settle the guest, one migration hop, observe afterwards.

Timer interrupts are checked on schedule, not eventually: right after each
hop the harness waits, without sending the guest anything (console input is
an interrupt that can wake a stalled CPU and hide the stall), for every CPU's
next tick, and gives up one tick period after the bound, plus however long
the host kept that CPU's vCPU thread waiting for a host CPU meanwhile (a
loaded host's late tick must arrive to be seen as the host's doing), a
second after the bound at most; then, the same way, for the tick after it
(the first can end a sleep the source's timer ended just before the stop:
only the second proves the destination's timer). A CPU whose tick does not
come is recorded (the tick check fails on it), and the harness goes on: its
next agent command wakes the guest (console input is an interrupt), which is
said in the evidence of what is measured after it, and what the guest no
longer answers is not measured, with the stall as the cause.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.checks.devices import DeviceTraffic
from harness.checks.generic import Observations, Progress, TickGap, missed_tick
from harness.checks.migrated_timebase import migrated_timebase
from harness.checks.result import CheckResult, Limits, not_measured
from harness.errors import GuestUnresponsive, QmpCommandError
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, IpiReport, LoadMode, Probe, RngReport, TbStats, Tick, parse_cpu_list

if TYPE_CHECKING:
    from harness.hostload.hop import HopWatch
    from harness.migration.run import MigrationFigures
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side

LATE_MARGIN_S = 0.25
"""How long past the tick-gap bound the harness waits for a CPU's tick when the host did not keep
the CPU's vCPU thread waiting: one tick period."""
LATE_MARGIN_MAX_S = 1.0
"""The longest past the tick-gap bound the harness waits for a CPU's tick, however long the host
kept its vCPU thread waiting, and when that is not measured."""
STALLED_ANSWER_S = 2.0
"""How long a guest with a stalled CPU gets to answer each request."""
STALLED_BEAT_S = 1.0
"""How long a CPU that missed its tick gets to show a busy beat (a running spinner beats about
ten times a second)."""
HELLO = "hello"
"""Prefix of the timing from ``cont`` to the agent's hello, per CPU count (``hello-2cpu``), kept with
a cell's phases (part of its boot phase)."""
PROBE_STALLED_S = 3.0
"""How long a guest with a stalled CPU gets to answer a probe."""

T = TypeVar("T")


@dataclass(frozen=True)
class Before:
    """The guest as seen on the source just before the first migration."""

    probe: Probe
    load: LoadMode
    cpus: tuple[int, ...]
    devices: RngReport | None = None
    """The virtio-rng reads on the source, when the scenario checks device traffic."""


@dataclass(frozen=True)
class Hop:
    """One migration and every CPU's ticks across it."""

    figures: MigrationFigures
    gaps: tuple[TickGap, ...]
    stream: Path | None = None
    """The stream the destination loaded, when recorded."""


def start_pair(ctx: ScenarioContext) -> tuple[Side, Side]:
    """The source, let run (its guest boots from then on: :func:`boot` waits for it), and the
    destination, started while the guest boots."""
    src = ctx.start("src")
    ctx.cont(src)
    return src, ctx.start("dst")


def boot(ctx: ScenarioContext, src: Side, load: LoadMode = "idle", *, devices: bool = False) -> Before:
    """Run the source (unless :meth:`ScenarioContext.cont` did) until the agent says hello, put
    the guest in ``load``, probe (and with ``devices``, read every virtio-rng, which
    :func:`observe` then checks on the destination), wait for every CPU's first tick (it comes
    250 ms after the agent starts: the questions before it cost no time) and reset the watchers."""
    agent = Agent(src.console)
    with ctx.phase("boot"):
        started = ctx.cont(src)
        cpus = parse_cpu_list(agent.hello(ctx.timeouts.boot_s).cpus)
        # firmware, kernel and init: what the guest image decides (goldmig bench shows it per build)
        ctx.phases[f"{HELLO}-{len(cpus)}cpu"] = time.monotonic() - started
    with ctx.phase("check"):
        agent.set_load(load)
        if load == "busy":
            for cpu in cpus:
                agent.beat_after(Busy, 0, ctx.timeouts.beat_s, cpu=cpu)
        probe = agent.probe()
        rng = agent.rng() if devices else None
        for cpu in cpus:
            agent.beat_after(Tick, 0, ctx.timeouts.beat_s, cpu=cpu)
        agent.tbreset()
    return Before(probe, load, cpus, rng)


def hop(ctx: ScenarioContext, src: Side, dst: Side, before: Before,
        earlier: Hop | None = None) -> Hop:
    """Migrate ``src`` to ``dst``, then wait for every CPU's next tick on ``dst`` (judged later).
    ``earlier`` is the hop that brought the guest to ``src``, if any."""
    result = ctx.migrate(src, dst)
    with ctx.phase("check"):
        gaps = tick_gaps(Agent(src.console), Agent(dst.console), before.cpus,
                         ctx.limits, result.figures.downtime_ms, earlier.gaps if earlier else (),
                         ctx.hop_watch(dst))
    return Hop(result.figures, gaps, result.stream)


def tick_gaps(source: Agent, destination: Agent, cpus: tuple[int, ...], limits: Limits,
              downtime_ms: int, earlier: tuple[TickGap, ...] = (),
              watch: HopWatch | None = None) -> tuple[TickGap, ...]:
    """Each CPU's last tick on the source, its first on the destination, waiting from now (the
    destination has just resumed) for as long as :func:`tick_deadline` says, and whether the
    tick after that came within one period plus the slack (:attr:`TickGap.timer_resumed`).

    ``earlier`` is the previous hop's gaps, when the source was that hop's destination: a CPU
    that never ticked there keeps its last tick from before that hop. ``watch`` (the hop's
    starvation windows, :meth:`ScenarioContext.hop_watch`) is closed here: each gap then says
    how long the host kept that CPU waiting."""
    resumed = time.monotonic()
    bound_s = limits.gap_bound_ms(downtime_ms) / 1000
    before = {g.cpu: g.last_before for g in earlier}
    gaps = []
    for cpu in cpus:
        last = source.latest(Tick, cpu=cpu) or before.get(cpu)
        if last is None:
            raise AssertionError(f"CPU {cpu} never ticked on the source")  # boot() waited for it
        first = _tick_after(destination, cpu, last.n, resumed + bound_s, watch)
        waited = (time.monotonic() - resumed) * 1000
        # a tick line the stop cut in two is the source's, completed once the destination ran
        last = source.latest(Tick, cpu=cpu) or last
        gaps.append(TickGap(cpu, last, first, round(waited)))
    for i, gap in enumerate(gaps):
        if gap.first_after is None:
            continue
        seen = resumed + gap.waited_ms / 1000  # no later than that the first one was in
        then = _tick_after(destination, gap.cpu, gap.first_after.n,
                           seen + (limits.tick_period_ms + limits.tb_slack_ms) / 1000, watch)
        gaps[i] = dataclasses.replace(gap, timer_resumed=then is not None,
                                      next_waited_ms=round((time.monotonic() - seen) * 1000))
    if watch is None:
        return tuple(gaps)
    host = watch.stop()
    return tuple(dataclasses.replace(g, starved_ms=host.of_cpu(g.cpu), host=host.describe()) for g in gaps)


def _tick_after(destination: Agent, cpu: int, n: int, bound_at: float, watch: HopWatch | None) -> Tick | None:
    """``cpu``'s first tick numbered above ``n`` on ``destination``, waited for until
    :func:`tick_deadline` past ``bound_at``; None if it did not come by then."""
    deadline = tick_deadline(bound_at, watch, cpu)
    while True:
        tick = destination.console.wait_for(
            Tick, lambda t: t.cpu == cpu and t.n > n, max(0.0, deadline - time.monotonic()))
        later = tick_deadline(bound_at, watch, cpu) if tick is None else deadline
        if later <= deadline:
            return tick
        deadline = later  # the host kept the vCPU waiting meanwhile: its tick may still come


def tick_deadline(bound_at: float, watch: HopWatch | None, cpu: int) -> float:
    """When to stop waiting for a tick of ``cpu`` after a hop, whose bound ends at ``bound_at``:
    :data:`LATE_MARGIN_S` after it, later by as long as the host has so far kept the
    CPU's vCPU thread waiting for a host CPU (``watch``), :data:`LATE_MARGIN_MAX_S` after it at
    most, and when that is not measured."""
    starved = watch.so_far().of_cpu(cpu) if watch is not None else None
    if starved is None:
        return bound_at + LATE_MARGIN_MAX_S
    return bound_at + min(LATE_MARGIN_S + starved / 1000, LATE_MARGIN_MAX_S)


def probe_after(dst: Side, stalled: bool) -> tuple[Probe | None, str]:
    """The destination's probe, with a short timeout while a CPU is ``stalled``, and what went
    unanswered: (None, why) when the guest then does not answer (the checks say so; hand ``why``
    to :func:`observe`, which then asks nothing more), (probe, "") otherwise. A guest silent with
    no CPU stalled is the failure: :class:`GuestUnresponsive` is raised."""
    try:
        return Agent(dst.console, timeout=PROBE_STALLED_S if stalled else 10.0).probe(), ""
    except GuestUnresponsive as exc:
        if not stalled:
            raise
        return None, str(exc)


def device_add_refusal(side: Side, **device: Any) -> str:
    """``device_add`` during a migration: QEMU's refusal (``<class>: <desc>``), or ``accepted``."""
    try:
        side.monitor.cmd("device_add", **device)
    except QmpCommandError as exc:
        return f"{exc.error_class}: {exc.desc}"
    return "accepted"


def to_busy(agent: Agent) -> bool:
    """Switch the guest to load mode busy (for :class:`Asker`, which needs an answer)."""
    agent.set_load("busy")
    return True


class Asker:
    """Asks the agent one thing after another until it stops answering; then each further
    question is skipped (None), and :attr:`silence` says what went unanswered first (``silence``:
    what already did, before this asker)."""

    def __init__(self, agent: Agent, silence: str = "") -> None:
        self.agent = agent
        self.silence = silence

    def __call__(self, question: Callable[[Agent], T]) -> T | None:
        if self.silence:
            return None
        try:
            return question(self.agent)
        except GuestUnresponsive as exc:
            self.silence = str(exc)
            return None


def observe(ctx: ScenarioContext, src: Side, dst: Side, before: Before,
            hops: list[Hop], devices: tuple[str, ...] | None = None, *, silence: str = "") -> Observations:
    """What the guest saw, read on ``dst`` after the last hop from ``src``, whether or not every
    CPU ticked on schedule: what the guest does not answer is left None, and so is everything
    once it did not answer (``silence``: what the scenario's own question after the hop left
    unanswered, :func:`probe_after`). When ``before`` read the devices, the PCI functions
    ``devices`` (default: every virtio device it had) must answer."""
    source = Agent(src.console)
    accel = ctx.setup_of(dst.role).accel
    stalled = sorted(set(missed_tick(g for h in hops for g in h.gaps)))
    ask = Asker(Agent(dst.console, timeout=STALLED_ANSWER_S if stalled else 10.0), silence)
    woken = (f"CPUs {stalled} missed their tick; the harness then sent the agent its next command "
             "over the console (an interrupt to the guest) to measure the rest") if stalled else ""
    with ctx.phase("check"):
        busy_before = {cpu: _latest_busy(source, cpu) for cpu in before.cpus}
        progress: list[Progress] = []
        if before.load == "busy" or ask(to_busy):
            for cpu in before.cpus:
                beat = dst.console.wait_for(
                    Busy, lambda b, c=cpu: b.cpu == c and b.n > busy_before[c],  # type: ignore[misc]
                    STALLED_BEAT_S if cpu in stalled else ctx.timeouts.beat_s)
                progress.append(Progress(cpu, busy_before[cpu], beat.n if beat else None))
        probe: Probe | None = ask(Agent.probe)
        stats: TbStats | None = ask(Agent.tbstats)
        ipi: IpiReport | None = ask(Agent.ipi)
        traffic = None
        if before.devices is not None:
            expected = devices if devices is not None else tuple(d.pci for d in before.devices.devices)
            # not asked of a stalled guest: the agent's reads wait on its timers (poll, and RCU in
            # the kernel's hwrng switch), which a CPU without timer interrupts never fires
            traffic = DeviceTraffic(before.devices, None if stalled else ask(Agent.rng), expected)
        return Observations(
            load=before.load,
            probe_before=before.probe,
            probe_after=probe,
            timebase=stats,
            downtime_ms=max(h.figures.downtime_ms for h in hops),
            source_status=src.monitor.cmd("query-status")["status"],
            destination_status=dst.monitor.cmd("query-status")["status"],
            hop_gaps=tuple(h.gaps for h in hops),
            accel=accel,
            migrated=tuple(migrated_timebase(h.stream) for h in hops) if accel == "kvm" else (),
            hop_downtimes_ms=tuple(h.figures.downtime_ms for h in hops),
            progress=tuple(progress),
            ipi=ipi,
            silence=ask.silence,
            woken=woken,
            devices=traffic,
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
        name = "timebase never goes backwards"
        if backwards is None:
            cause = ("timer-interrupts-on-every-cpu-of-the-source" if None in self.ticks_after.values()
                     else "cpu-progress-on-every-cpu-of-the-source")
            back = not_measured(name, "the source's watchers were not read: a CPU missed its tick "
                                "or its busy beat", bound=0, cause=cause)
        else:
            back = CheckResult(name, not backwards, 0, backwards,
                               "per-CPU watcher on the source since tbreset")
        return [
            CheckResult("timer interrupts on every CPU of the source",
                        bool(self.ticks_after) and None not in self.ticks_after.values(),
                        "a new tick per CPU", self.ticks_after,
                        "first tick number per CPU after the migration failed"),
            CheckResult("CPU progress on every CPU of the source",
                        bool(self.busy_after) and None not in self.busy_after.values(),
                        "a busy beat per CPU", self.busy_after,
                        "first busy beat per CPU after the load was switched to busy"),
            back,
        ]


def carried_on(ctx: ScenarioContext, src: Side, before: Before) -> CarriedOn:
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
