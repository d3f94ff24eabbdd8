"""Timebase checks of one migration hop: per CPU and across CPUs, pure functions of what was seen.

No QEMU here. After a hop the guest's spinners (load mode busy) have watched
their own ``mftb`` since the reset before the hop (``tbstats``) and then
sampled it against each other under one lock (``tbwarp``). A check the guest
did not answer for is not measured (caused by the stall when a CPU missed its
tick), one with nothing to compare (one CPU) not applicable, and a CPU
without samples fails it: none passes vacuously.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.checks.generic import (
    TickGap,
    jump_evidence,
    jump_overloaded,
    missed_tick,
    ticks_on_schedule,
    timebase_jump,
)
from harness.checks.result import HOST_OVERLOADED, CheckResult, Limits, check_id, not_applicable, not_measured
from harness.guest.protocol import TbStats, TbWarp


@dataclass(frozen=True)
class HopTimebase:
    """The timebase as the guest saw it across one hop, read on the hop's destination."""

    number: int
    """1 for the first hop."""
    downtime_ms: int
    """QEMU's reported downtime of this hop."""
    gaps: tuple[TickGap, ...]
    stats: TbStats | None
    """Per-CPU watchers since the reset before the hop; None when the guest did not answer."""
    warp: TbWarp | None
    """The cross-CPU samples right after the hop; None when the guest did not answer."""
    silence: str = ""
    """Why the guest did not answer tbwarp or tbstats (empty when it did)."""

    @property
    def stalled(self) -> bool:
        return bool(missed_tick(self.gaps))

    def unanswered(self, name: str, what: str, bound: object = "") -> CheckResult:
        """``name`` not measured, caused by this hop's tick check when a CPU stalled, else by
        the guest's silence (:func:`answered`)."""
        return not_measured(name, f"hop {self.number}: the guest did not answer {what}: "
                            f"{self.silence or 'no reply'}", bound=bound,
                            cause=check_id(_ticks_name(self.number)) if self.stalled
                            else check_id(_answers_name(self.number)))


def _ticks_name(number: int) -> str:
    return f"timer ticks on schedule after hop {number}"


def _answers_name(number: int) -> str:
    return f"guest answers after hop {number}"


def ticks_after(hop: HopTimebase, tb_freq: int, limits: Limits) -> CheckResult:
    """The generic tick check of one hop, named for it."""
    return dataclasses.replace(ticks_on_schedule(hop.gaps, hop.downtime_ms, tb_freq, limits),
                               invariant=_ticks_name(hop.number))


def never_backwards(hop: HopTimebase, tb_freq: int) -> CheckResult:
    """No CPU's own mftb went back across the hop (watcher), nor its tick's timebase."""
    name = f"timebase never goes backwards across hop {hop.number}"
    if hop.stats is None:
        return hop.unanswered(name, "tbstats", 0)
    idle = [c.cpu for c in hop.stats.cpus if c.samples == 0]
    back = {c.cpu: f"{c.max_back} ticks ({c.max_back * 1000 / tb_freq:.1f} ms)"
            for c in hop.stats.cpus if c.max_back}
    tick_back = {g.cpu: g.gap for g in hop.gaps if g.gap is not None and g.gap < 0}
    return CheckResult(
        name, bool(hop.stats.cpus) and not idle and not back and not tick_back, 0,
        f"largest backward step by CPU: {back or 'none'}; tick timebase backwards: {tick_back or 'none'}",
        f"hop {hop.number}: per-CPU mftb watcher since the reset before the hop "
        f"({', '.join(f'CPU {c.cpu} {c.samples} samples' for c in hop.stats.cpus)}"
        f"{'; no samples on CPUs ' + str(idle) if idle else ''}), and each CPU's ticks across it",
    )


def jump_within_bound(hop: HopTimebase, tb_freq: int, limits: Limits) -> CheckResult:
    """The timebase jumped forward across the hop by no more than its downtime plus the slack
    (the jump every CPU's watcher saw: :func:`harness.checks.generic.timebase_jump`)."""
    name = f"timebase forward jump within bound across hop {hop.number}"
    bound_ms = hop.downtime_ms + limits.tb_slack_ms
    bound = bound_ms * tb_freq // 1000
    expected = f"<= {bound} ticks ({hop.downtime_ms} ms downtime + {limits.tb_slack_ms} ms slack)"
    if hop.stats is None:
        return hop.unanswered(name, "tbstats", expected)
    jump = timebase_jump(hop.stats.cpus)
    idle = [c.cpu for c in hop.stats.cpus if c.samples == 0]
    stalled = [c.cpu for c in hop.stats.cpus if c.samples > 0 and c.max_fwd > bound]
    if (starved := jump_overloaded(name, hop.stats.cpus, tb_freq, bound_ms, hop.gaps, expected)):
        return starved
    return CheckResult(
        name, jump is not None and not idle and jump <= bound, expected,
        "no CPU sampled" if jump is None else f"{jump} ticks ({jump * 1000 / tb_freq:.1f} ms)",
        f"hop {hop.number}: the timebase's jump is the smallest of the CPUs' largest forward mftb "
        f"steps between consecutive samples (QEMU's downtime from query-migrate); per CPU: "
        f"{jump_evidence(hop.stats.cpus, tb_freq)}"
        + (f"; no samples on CPUs {idle}" if idle else "")
        + (f"; CPUs {stalled} went longer than the bound without a sample while another sampled"
           if stalled and jump is not None and jump <= bound else ""),
    )


def kept_apart(warp: TbWarp) -> list[int]:
    """The CPUs the host never ran beside another during a ``tbwarp`` window: every CPU sampled,
    none is behind another, and these were never compared (what :func:`in_step` calls the host's
    load, not measured); empty when the window measured something either way."""
    unpaired = [c.cpu for c in warp.cpus if c.cross == 0]
    if any(c.max_warp for c in warp.cpus) or not all(c.samples for c in warp.cpus):
        return []
    return unpaired


def in_step(hop: HopTimebase, tb_freq: int) -> CheckResult:
    """Every CPU's timebase in step with the others': no CPU's sample below the one another CPU
    took just before it under the lock, so no CPU behind another by more than the sampling
    interval (the smallest step between two CPUs' consecutive samples, reported)."""
    name = f"timebase in step across CPUs after hop {hop.number}"
    expected = "no CPU behind another (cross-CPU backward step 0 ticks)"
    warp = hop.warp
    if warp is None:
        return hop.unanswered(name, "tbwarp", expected)
    if len(warp.cpus) < 2:
        return not_applicable(name, f"{len(warp.cpus)} CPU: no other CPU to be in step with",
                              bound=expected)
    unpaired = [c.cpu for c in warp.cpus if c.cross == 0]
    behind = {c.cpu: c.max_warp for c in warp.cpus if c.max_warp}
    crossed = [c for c in warp.cpus if c.cross]
    interval = min((c.min_gap for c in crossed), default=None)
    resolution = ("no two CPUs compared" if interval is None else
                  f"sampling interval (smallest step between two CPUs' samples) {interval} ticks "
                  f"= {interval * 1e6 / tb_freq:.2f} us, largest "
                  f"{max(c.max_gap for c in crossed) * 1e6 / tb_freq:.0f} us")
    if apart := kept_apart(warp):
        return not_measured(name, f"hop {hop.number}: CPUs {apart} never sampled right after another "
                            f"CPU in the {warp.window * 1000 / tb_freq:.0f} ms window, so nothing was "
                            "compared for them: their vCPUs did not run at the same time (the host "
                            "gave them no CPUs together; seen at -n 2 with nested hosts, 4 L0 QEMUs on 2 "
                            f"cores); {resolution}", bound=expected, cause=HOST_OVERLOADED)
    why = []
    if unpaired:
        why.append(f"CPUs {unpaired} never sampled after another CPU")
    if behind:
        why.append(", ".join(f"CPU {cpu} behind by {ticks} ticks ({ticks * 1e6 / tb_freq:.1f} us)"
                             for cpu, ticks in behind.items()))
    return CheckResult(
        name, not why, expected,
        {c.cpu: f"behind by {c.max_warp} ticks; {c.cross} of {c.samples} samples after another CPU's"
         for c in warp.cpus},
        f"hop {hop.number}: tbwarp, every CPU's spinner sampling mftb under one lock for "
        f"{warp.window} ticks ({warp.window * 1000 / tb_freq:.0f} ms); {resolution}"
        + (f"; {'; '.join(why)}" if why else ""),
    )


def answered(hop: HopTimebase) -> CheckResult:
    """The guest answered the hop's measurements (a guest that cannot, with every CPU's first
    tick on time, has stalled since: the timebase checks then have nothing to look at)."""
    return CheckResult(_answers_name(hop.number), not hop.silence,
                       "tbwarp and tbstats answered", hop.silence or "answered",
                       f"hop {hop.number}: the agent's replies on the console")


def hop_checks(hop: HopTimebase, tb_freq: int, limits: Limits) -> list[CheckResult]:
    """The hop's own timebase checks, in the order a reader wants them (first whether the guest
    answered, when it did not)."""
    own = [never_backwards(hop, tb_freq), jump_within_bound(hop, tb_freq, limits), in_step(hop, tb_freq)]
    # a guest silent after a CPU missed its tick: the stall is the finding, the rest not measured
    return [answered(hop), *own] if hop.silence and not hop.stalled else own
