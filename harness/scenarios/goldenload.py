"""goldenload: a stored golden stream of the source build is loaded into the destination build.

The stream (the golden guest running on the source build, saved once with the
cell's machine type and options, cached) goes in with ``-incoming`` from the
file, as a restore would; no live source runs. The guest must run on the
destination with every CPU ticking and making progress, keep a monotonic
timebase, and keep the interrupt controller it negotiated (the CAS vector in
the stream).

The stream's spapr ``guest_timebase`` is not compared with the guest's mftb:
under TCG QEMU computes it from the host's tick counter plus the TCG offset,
so it is not the guest's timebase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import STALL, equal
from harness.checks.result import CheckResult, Limits, not_measured
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, Probe, TbStats, Tick
from harness.scenarios.declare import Needs, Scenario, single
from harness.scenarios.steps import LATE_MARGIN_MAX_S, STALLED_ANSWER_S, STALLED_BEAT_S, Asker, to_busy
from harness.stream import summarise

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.scenarios.declare import Variant


@dataclass(frozen=True)
class GoldenLoadObservations:
    stream: str
    stream_intc: str | None
    destination_status: str
    ticks: dict[int, int | None]
    """Per CPU: the first tick number after the load (None: none came)."""
    busy: dict[int, int | None]
    probe: Probe | None
    timebase: TbStats | None
    waited_ms: int
    """How long the harness waited for the first ticks after the load."""
    silence: str = ""
    """What the guest did not answer (empty: it answered everything)."""

    def checks(self, limits: Limits) -> list[CheckResult]:
        stalled = None in self.ticks.values()
        cause = STALL if stalled else None
        why = f"the guest did not answer: {self.silence}"
        if self.timebase is None:
            backwards = not_measured("timebase never goes backwards", why, bound=0, cause=cause)
        else:
            back = {c.cpu: c.max_back for c in self.timebase.cpus if c.max_back}
            backwards = CheckResult("timebase never goes backwards", not back, 0, back or 0,
                                    "per-CPU watcher on the destination")
        if self.probe is None:
            intc = not_measured("interrupt controller as negotiated in the stream", why,
                                bound=self.stream_intc, cause=cause)
        else:
            intc = CheckResult("interrupt controller as negotiated in the stream",
                               self.stream_intc is not None and self.probe.intc == self.stream_intc,
                               self.stream_intc, self.probe.intc,
                               f"CAS option vector 5 in {self.stream} vs /proc/interrupts")
        late = "; ".join(f"CPU {cpu}: no tick within {self.waited_ms} ms of the destination resuming"
                         for cpu, n in self.ticks.items() if n is None)
        return [
            equal("destination is running", "running", self.destination_status,
                  "query-status on destination after loading the stream"),
            CheckResult("timer ticks on schedule", bool(self.ticks) and not stalled,
                        f"a tick on every CPU within {self.waited_ms} ms of the destination resuming",
                        _shown(self.ticks),
                        late or "first tick per CPU on the destination, waited for on schedule: one "
                        "tick period plus the slack after the load, plus a second"),
            CheckResult("CPU progress on every CPU", bool(self.busy) and None not in self.busy.values(),
                        "a busy beat per CPU", self.busy, "first busy beat per CPU on the destination")
            if self.busy else not_measured("CPU progress on every CPU", why, cause=cause),
            backwards,
            intc,
        ]


def _shown(ticks: dict[int, int | None]) -> str:
    return "ticks: " + ", ".join(f"CPU {cpu} " + (f"#{n}" if n else "none") for cpu, n in ticks.items())


def run(ctx: ScenarioContext, variant: Variant[None]) -> GoldenLoadObservations:
    from harness.stream.golden import golden_stream  # records with a local build: runtime only

    with ctx.phase("provision"):
        stream = golden_stream(ctx.builds[0], ctx.setup, ctx.rundir)
        spapr = summarise(stream).as_dict().get("spapr") or {}
    dst = ctx.start("dst")
    with ctx.phase("migrate"):
        ctx.load_stream(dst, stream)
        stream.unlink()  # a copy; the cache keeps the original
    destination = Agent(dst.console)
    with ctx.phase("check"):
        # The agent announced its CPUs on the saving QEMU's console, not this one.
        cpus = range(ctx.setup.smp)
        # On schedule: a tick on every CPU within one period plus the slack of the load (the
        # host's load is not measured here, so the longest margin).
        deadline = time.monotonic() + ctx.limits.gap_bound_ms(0) / 1000 + LATE_MARGIN_MAX_S
        loaded = time.monotonic()
        ticks = {}
        for cpu in cpus:
            tick = destination.console.wait_for(Tick, lambda t, c=cpu: t.cpu == c,  # type: ignore[misc]
                                                max(0.0, deadline - time.monotonic()))
            ticks[cpu] = tick.n if tick else None
        waited = round((time.monotonic() - loaded) * 1000)
        stalled = [cpu for cpu, n in ticks.items() if n is None]
        ask = Asker(Agent(dst.console, timeout=STALLED_ANSWER_S if stalled else 10.0))
        busy: dict[int, int | None] = {}
        if ask(to_busy):
            for cpu in cpus:
                beat = destination.console.wait_for(Busy, lambda b, c=cpu: b.cpu == c,  # type: ignore[misc]
                                                    STALLED_BEAT_S if cpu in stalled else ctx.timeouts.beat_s)
                busy[cpu] = beat.n if beat else None
        return GoldenLoadObservations(
            stream=stream.name,
            stream_intc=(spapr.get("cas") or {}).get("interrupt_controller"),
            destination_status=dst.monitor.cmd("query-status")["status"],
            ticks=ticks,
            busy=busy,
            probe=ask(Agent.probe),
            timebase=ask(Agent.tbstats),
            waited_ms=waited,
            silence=ask.silence,
        )


SCENARIO = Scenario(
    name="goldenload",
    description="a stored golden stream of the source build loaded into the destination build",
    run=run,
    variants=single(),
    needs=Needs(local_builds=True),
)
