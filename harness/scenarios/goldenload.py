"""goldenload: a stored golden stream of the source build is loaded into the destination build.

The stream (the golden guest running on the source build, saved once with the
cell's machine type and options, cached) goes in with ``-incoming`` from the
file, as a restore would; the live source QEMU stays paused and unused. The
guest must run on the destination, keep a monotonic timebase, and keep the
interrupt controller it negotiated (the CAS vector in the stream).

The stream's spapr ``guest_timebase`` is not compared with the guest's mftb:
under TCG QEMU computes it from the host's tick counter plus the TCG offset,
so it is not the guest's timebase.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.checks import CheckResult
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, Probe, TbStats, Tick
from harness.migration.run import wait_destination_running
from harness.save import golden_stream
from harness.scenarios.context import ScenarioContext
from harness.stream import summarise


@dataclass(frozen=True)
class GoldenLoadObservations:
    stream: str
    stream_intc: str | None
    destination_status: str
    busy: Busy
    tick: Tick
    probe: Probe
    timebase: TbStats

    def checks(self, tb_slack_ms: int) -> list[CheckResult]:
        return [
            CheckResult("destination is running", self.destination_status == "running", "running",
                        self.destination_status, "query-status on destination after loading the stream"),
            CheckResult("CPU progress (busy heartbeat)", self.busy.n > 0, "> 0", self.busy.n,
                        "first busy beat on the destination"),
            CheckResult("timer interrupts (tick heartbeat)", self.tick.n > 0, "> 0", self.tick.n,
                        "first tick on the destination"),
            CheckResult("timebase never goes backwards", self.timebase.max_back == 0, 0,
                        self.timebase.max_back, "watcher since the guest booted on the source build"),
            CheckResult("interrupt controller as negotiated in the stream",
                        self.stream_intc is not None and self.probe.intc == self.stream_intc,
                        self.stream_intc, self.probe.intc,
                        f"CAS option vector 5 in {self.stream} vs /proc/interrupts"),
        ]


def run(ctx: ScenarioContext) -> GoldenLoadObservations:
    with ctx.phase("provision"):
        stream = golden_stream(ctx.builds[0], ctx.setup, ctx.rundir)
        summary = summarise(stream).as_dict()
    spapr = summary.get("spapr") or {}
    with ctx.phase("migrate"):
        ctx.dst.monitor.cmd("migrate-incoming", uri=f"exec:cat {stream}")
        wait_destination_running(ctx.dst, ctx.timeouts.migrate_s)
        stream.unlink()  # a copy; the cache keeps the original
    destination = Agent(ctx.dst.console)
    with ctx.phase("check"):
        busy = destination.beat_after(Busy, 0, ctx.timeouts.beat_s)
        tick = destination.beat_after(Tick, 0, ctx.timeouts.beat_s)
        return GoldenLoadObservations(
            stream=stream.name,
            stream_intc=(spapr.get("cas") or {}).get("interrupt_controller"),
            destination_status=ctx.dst.monitor.cmd("query-status")["status"],
            busy=busy,
            tick=tick,
            probe=destination.probe(),
            timebase=destination.tbstats(),
        )
