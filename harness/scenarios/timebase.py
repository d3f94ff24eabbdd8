"""timebase: every CPU's timebase across several migrations in a row, per CPU and across CPUs.

Guards against a destination that restores the timebase differently on each
vCPU, or a little further off with every hop: KVM's ``timebase_load``
(hw/ppc/ppc.c) sets every vCPU's ``tb_offset`` from the first CPU's, and a
vCPU left out (or set from a stale value on a later hop) runs ahead of or
behind the others; Linux then sees ``mftb`` differ between CPUs (its
clocksource assumes one timebase), so time goes backwards for a task that
moves CPU and the scheduler's and timers' arithmetic breaks. The same
offset applied twice, or a downtime counted on one hop only, shows as a
backward step or a jump beyond QEMU's own downtime on the second or third
hop, never on the first.

The guest spins on every CPU (load mode busy) and migrates source to
destination, then onward twice to fresh QEMUs of the destination's build
(the way back to an older build is refused for every Debian pair, so a
round trip would stop there). Every hop is made, whatever the guest does (a
silent guest still migrates; what it cannot answer is not measured). After
each hop, measured whatever the ticks do: each CPU's own ``mftb`` never went
back and jumped no further than the hop's downtime plus the slack
(``tbstats``), and the CPUs are in step with each other (``tbwarp``: no CPU
behind the one sampled just before it under a lock, so none is off by more
than the reported sampling interval). Then the ticks on schedule after every
hop, and after the last the generic checks. Under TCG no per-CPU offset can be
forced (see ``harness.checks.timebase`` and the project test), so the non-vacuity test winds
the machine's clock back in the stream (variant data ``rewind_ms``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.checks.generic import STALL, Observations, TickGap, generic_checks, missed_tick
from harness.checks.result import CheckResult, Limits
from harness.checks.timebase import HopTimebase, hop_checks, kept_apart, ticks_after
from harness.errors import ConfigError, GuestUnresponsive
from harness.guest.agent import Agent
from harness.guest.protocol import TbStats, TbWarp
from harness.scenarios.declare import Needs, Scenario, Variant
from harness.scenarios.steps import STALLED_ANSWER_S, Asker, Before, Hop, boot, observe, tick_gaps
from harness.stream.clock import rewind_clock

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side

HOP_ROLES = ("dst", "again", "onward")
"""The destination of each hop in turn: the first crosses builds, the others stay on dst's."""
OWN = ("timebase never goes backwards", "timebase forward jump within bound", "timer ticks on schedule")
"""Generic checks this scenario makes per hop instead."""


@dataclass(frozen=True)
class Plan:
    hops: int
    rewind_ms: int = 0
    """Non-vacuity only: the last hop loads its recorded stream, virtual clock set back by this
    much, into a further QEMU (the timebase then goes back on every CPU)."""

    def __post_init__(self) -> None:
        roles = len(HOP_ROLES) - (1 if self.rewind_ms else 0)  # a rewind takes one more QEMU
        if not 1 <= self.hops <= roles:
            raise ValueError(f"timebase: {self.hops} hops, but roles for 1 to {roles}")


@dataclass(frozen=True)
class TimebaseObservations:
    tb_freq: int
    hops: tuple[HopTimebase, ...]
    seen: Observations
    """The generic observations after the last hop."""

    def checks(self, limits: Limits) -> list[CheckResult]:
        own = [c for hop in self.hops for c in hop_checks(hop, self.tb_freq, limits)]
        ticks = [ticks_after(hop, self.tb_freq, limits) for hop in self.hops]
        stalled = next((t.id for t in ticks if not t.ok), None)
        generic = [dataclasses.replace(c, cause=stalled) if c.cause == STALL and stalled else c
                   for c in generic_checks(self.seen, limits, without=OWN)]
        return [*own, *ticks, *generic]


def run(ctx: ScenarioContext, variant: Variant[Plan]) -> TimebaseObservations:
    plan = variant.data
    sides = [ctx.start("src")]
    before = boot(ctx, sides[0], load="busy")
    hops: list[HopTimebase] = []
    figures: list[Hop] = []
    for number, role in enumerate(HOP_ROLES[:plan.hops], 1):
        src, dst = sides[-1], ctx.start(role)
        unreset = _reset(src, hops[-1]) if hops else ""
        result = ctx.migrate(src, dst)
        loaded = result.stream
        if plan.rewind_ms and number == plan.hops:
            dst, loaded = _load_rewound(ctx, result.stream, HOP_ROLES[number], plan.rewind_ms)
        measured = _measure(ctx, src, dst, before, number, result.figures.downtime_ms,
                            hops[-1].gaps if hops else (), unreset)
        hops.append(measured)
        figures.append(Hop(result.figures, measured.gaps, loaded))
        sides.append(dst)
    seen = observe(ctx, sides[-2], sides[-1], before, figures)
    return TimebaseObservations(before.probe.tb_freq, tuple(hops), seen)


def _reset(src: Side, previous: HopTimebase) -> str:
    """Reset the watchers before the next hop; why it could not be done (empty: done)."""
    if previous.silence:
        return f"the guest no longer answered after hop {previous.number}"
    try:
        Agent(src.console, timeout=STALLED_ANSWER_S if previous.stalled else 10.0).tbreset()
    except GuestUnresponsive as exc:
        return f"the watchers could not be reset before the hop: {exc}"
    return ""


def _measure(ctx: ScenarioContext, src: Side, dst: Side, before: Before, number: int,
             downtime_ms: int, earlier: tuple[TickGap, ...], unreset: str) -> HopTimebase:
    """Right after a hop: every CPU's next tick (waiting at most past the bound), then the
    watchers and then the cross-CPU samples, whether or not every CPU ticked. A guest that does not
    answer is recorded as such (a CPU that ticked once and then stalled takes the console's
    input with it: seen on QEMU 10.0 destinations, whose CPU 1 takes no interrupts); so is a hop
    whose watchers were not reset before it (``unreset``: its statistics would span hops)."""
    with ctx.phase("check"):
        gaps = tick_gaps(Agent(src.console), Agent(dst.console), before.cpus, ctx.limits, downtime_ms,
                         earlier, ctx.hop_watch(dst))
        stalled = bool(missed_tick(gaps))
        ask = Asker(Agent(dst.console, timeout=STALLED_ANSWER_S if stalled else 10.0))
        if unreset:
            return HopTimebase(number, downtime_ms, gaps, None, None, unreset)
        # the watchers first: during tbwarp the spinners sample together, not for their watchers,
        # so a tbstats after it spans that pause (200 ms, up to 600 ms under load: seen as a
        # "jump" on both CPUs at once)
        stats: TbStats | None = ask(Agent.tbstats)
        warp: TbWarp | None = ask(Agent.tbwarp)
        if warp is not None and kept_apart(warp):
            # the host ran the vCPUs one at a time in that window (right after a hop, its busiest
            # moment), so nothing was compared for some CPU: compare once more
            warp = ask(Agent.tbwarp) or warp
    return HopTimebase(number, downtime_ms, gaps, stats, warp, ask.silence)


def _load_rewound(ctx: ScenarioContext, stream: Path | None, role: str, rewind_ms: int) -> tuple[Side, Path]:
    """A fresh QEMU of the hop's build resumed from the hop's recorded stream with the virtual
    clock and spapr's timebase ``rewind_ms`` earlier (the hop's own destination runs on,
    unobserved), and the rewound stream."""
    if stream is None:
        raise ConfigError("matrix.yaml", "reports.keep_streams",
                          "the timebase rewind needs the recorded stream; 'none' records none")
    rewound = stream.with_name(f"{stream.stem}-rewound{stream.suffix}")
    rewind_clock(stream, rewound, rewind_ms * 1_000_000)
    side = ctx.start(role)
    with ctx.phase("migrate"):
        ctx.load_stream(side, rewound)
    return side, rewound


SCENARIO = Scenario(
    name="timebase",
    description="three hops in a row: every CPU's timebase never back, within QEMU's downtime, in step",
    run=run,
    variants=(Variant("", Plan(hops=3), description="source to destination, then onward twice on the "
                      "destination's build, the guest spinning on every CPU"),),
    needs=Needs(),
)
