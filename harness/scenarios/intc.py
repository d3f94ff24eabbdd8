"""intc: the interrupt controller mode (ic-mode xics, xive, dual) across a migration.

Guards against a destination whose interrupt controller is not the one the
guest runs on: the pseries-4.0 to 4.2 machine types broke this before (ic-mode
against the cap-xics/cap-xive capabilities, a dual-mode destination activating
the wrong controller on load, XIVE state not restored), and the guest then
loses its IPIs or timer interrupts, or wakes up on the other controller. With
``dual`` the guest chooses at CAS; what it chose travels in the stream (spapr
``ov5_cas``) and QEMU's post_load must activate that one.

The guest must use the variant's controller on the source (for ``dual``: the
one the stream's CAS vector names), keep it on the destination, and take
timer interrupts on schedule and IPIs between every pair of CPUs there. Its
own checks come first, and are measured before the generic tick check can end
the cell, so a known timer failure of a build never hides a controller that
changed. Machine types older than pseries-4.0 have no ic-mode and are XICS
only: skipped by the seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import Observations, TickGap, generic_checks, missed_tick
from harness.checks.result import CheckResult, Limits
from harness.guest.agent import Agent
from harness.guest.protocol import Probe
from harness.scenarios.declare import MachineChange, Needs, Scenario, Variant
from harness.scenarios.steps import Hop, boot, observe, probe_after, start_pair, tick_gaps
from harness.stream import summarise

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext

DUAL = "negotiated"
"""A variant's expected controller when the guest chooses it at CAS (ic-mode=dual)."""


@dataclass(frozen=True)
class IntcObservations:
    expected: str
    """XICS or XIVE, or :data:`DUAL` (then the stream's CAS vector says which)."""
    stream_intc: str | None
    """What the recorded stream's CAS option vector 5 negotiated (None: no stream recorded)."""
    before: Probe
    after: Probe | None
    """The destination's probe; None when the guest did not answer it (a CPU already stalled)."""
    gaps: tuple[TickGap, ...]
    downtime_ms: int
    seen: Observations
    """The generic observations, measured after the controller's."""

    @property
    def wanted(self) -> str | None:
        return self.stream_intc if self.expected == DUAL else self.expected

    def checks(self, limits: Limits) -> list[CheckResult]:
        kept = CheckResult(
            "same interrupt controller after migration",
            self.after is not None and self.after.intc == self.before.intc, self.before.intc,
            self.after.intc if self.after else "no answer to the probe",
            f"/proc/interrupts on source and destination (controllers "
            f"{', '.join(self.after.intc_names) if self.after else 'unknown'} after)")
        own = [
            CheckResult("guest uses the variant's interrupt controller",
                        self.wanted is not None and self.before.intc == self.wanted,
                        self.wanted or "no recorded stream", self.before.intc,
                        "ic-mode of the variant (dual: CAS option vector 5 in the recorded stream) vs "
                        "/proc/interrupts on the source"),
        ]
        if self.after is not None:
            own.append(kept)
        if self.expected == DUAL:
            own.append(CheckResult("stream's CAS vector matches the guest",
                                   self.stream_intc == self.before.intc, self.stream_intc, self.before.intc,
                                   "spapr ov5_cas in the stream vs /proc/interrupts"))
        if self.after is None:
            own.append(self.seen.unanswered(kept.invariant, "probe", self.before.intc))
        return [*own, *generic_checks(self.seen, limits)]


def run(ctx: ScenarioContext, variant: Variant[str]) -> IntcObservations:
    src, dst = start_pair(ctx)
    before = boot(ctx, src)
    result = ctx.migrate(src, dst)
    with ctx.phase("check"):
        gaps = tick_gaps(Agent(src.console), Agent(dst.console), before.cpus, ctx.limits,
                         result.figures.downtime_ms, watch=ctx.hop_watch(dst))
        # the controller first: measured whatever follows, if the guest can still answer
        after, silence = probe_after(dst, bool(missed_tick(gaps)))
        stream_intc = None
        if result.stream is not None:
            spapr = summarise(result.stream).as_dict().get("spapr") or {}
            stream_intc = (spapr.get("cas") or {}).get("interrupt_controller")
    seen = observe(ctx, src, dst, before, [Hop(result.figures, gaps, result.stream)], silence=silence)
    return IntcObservations(variant.data, stream_intc, before.probe, after, gaps,
                            result.figures.downtime_ms, seen)


def _mode(mode: str, expected: str, description: str) -> Variant[str]:
    return Variant(mode, expected, source=MachineChange(properties=(("ic-mode", mode),)),
                   description=description)


SCENARIO = Scenario(
    name="intc",
    description="ic-mode xics, xive or dual: the guest keeps its interrupt controller, IPIs and ticks",
    run=run,
    variants=(
        _mode("xics", "XICS", "ic-mode=xics on both sides"),
        _mode("xive", "XIVE", "ic-mode=xive on both sides"),
        _mode("dual", DUAL, "ic-mode=dual on both sides; the guest picks at CAS"),
    ),
    needs=Needs(machine_properties=("ic-mode",), min_machine=(4, 0)),
)
