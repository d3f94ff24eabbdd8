"""Guest-visible invariants after a migration: named checks, pure functions of observations.

No QEMU here. A scenario composes the generic checks (:func:`generic_checks`,
leaving out some by name) with its own; every check yields one
:class:`CheckResult` whose ``invariant`` is the check's name. Per-CPU checks
look at every CPU and name the ones that broke.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from harness.errors import CheckFailed, ConfigError
from harness.guest.protocol import CpuTbStats, IpiReport, Probe, TbStats, Tick, parse_cpu_list

TICK_PERIOD_MS = 250
"""The agent's per-CPU tick period (guests/golden/PROTOCOL.md)."""


@dataclass(frozen=True)
class Limits:
    """Bounds the checks apply, from matrix.yaml ``checks``."""

    tb_slack_ms: int
    tick_period_ms: int = TICK_PERIOD_MS

    def gap_bound_ms(self, downtime_ms: int) -> int:
        """The largest allowed gap between two ticks of one CPU across a migration."""
        return self.tick_period_ms + downtime_ms + self.tb_slack_ms


@dataclass(frozen=True)
class CheckResult:
    invariant: str
    ok: bool
    before: object
    after: object
    evidence: str


@dataclass(frozen=True)
class TickGap:
    """One CPU's timer ticks around the last hop: the last on the source, the first after."""

    cpu: int
    last_before: Tick
    first_after: Tick | None
    waited_ms: int
    """How long the harness waited on the destination for ``first_after`` (wall time)."""

    @property
    def gap(self) -> int | None:
        """Timebase ticks between the two, None when no tick came."""
        return None if self.first_after is None else self.first_after.tb - self.last_before.tb


@dataclass(frozen=True)
class Progress:
    """One CPU's busy heartbeat number before the migration and first seen after it."""

    cpu: int
    before: int
    after: int | None


@dataclass(frozen=True)
class Observations:
    """What a migrating scenario saw: both sides' status, probes, and every CPU's heartbeats."""

    load: str
    """The guest's load mode while it migrated: idle, busy or timer."""
    probe_before: Probe
    probe_after: Probe
    timebase: TbStats
    """Per-CPU watcher statistics on the destination since the reset before the migration."""
    downtime_ms: int
    """QEMU's reported downtime (the largest, over several hops)."""
    source_status: str
    destination_status: str
    tick_gaps: tuple[TickGap, ...]
    progress: tuple[Progress, ...]
    ipi: IpiReport

    def checks(self, limits: Limits) -> list[CheckResult]:
        return generic_checks(self, limits)


Check = Callable[[Observations, Limits], CheckResult]


def _status(obs: Observations, limits: Limits) -> CheckResult:
    return _equal("source is postmigrate", "postmigrate", obs.source_status, "query-status on source")


def _running(obs: Observations, limits: Limits) -> CheckResult:
    return _equal("destination is running", "running", obs.destination_status,
                  "query-status on destination")


def ticks_on_schedule(gaps: tuple[TickGap, ...], downtime_ms: int, tb_freq: int,
                      limits: Limits) -> CheckResult:
    """Every CPU ticked again across the migration within the tick period plus QEMU's downtime
    plus the slack (in guest timebase), or names the CPUs that did not."""
    bound_ms = limits.gap_bound_ms(downtime_ms)
    late = []
    for gap in gaps:
        if gap.first_after is None:
            late.append(f"CPU {gap.cpu}: no tick after #{gap.last_before.n} within {gap.waited_ms} ms "
                        "of the destination resuming")
        elif gap.gap is not None and gap.gap * 1000 > bound_ms * tb_freq:
            late.append(f"CPU {gap.cpu}: tick #{gap.last_before.n} to #{gap.first_after.n} took "
                        f"{gap.gap * 1000 / tb_freq:.0f} ms of timebase")
    shown = ", ".join(f"CPU {g.cpu} " + ("none" if g.gap is None else f"{g.gap * 1000 / tb_freq:.0f} ms")
                      for g in gaps)
    return CheckResult(
        "timer ticks on schedule", bool(gaps) and not late,
        f"every CPU's tick gap <= {bound_ms} ms ({limits.tick_period_ms} ms period + "
        f"{downtime_ms} ms downtime + {limits.tb_slack_ms} ms slack)",
        f"gaps: {shown}",
        "; ".join(late) or "each CPU's last tick on the source and first on the destination (timebase)",
    )


def _ticks(obs: Observations, limits: Limits) -> CheckResult:
    return ticks_on_schedule(obs.tick_gaps, obs.downtime_ms, obs.probe_before.tb_freq, limits)


def _progress(obs: Observations, limits: Limits) -> CheckResult:
    stalled = [p.cpu for p in obs.progress if p.after is None or p.after <= p.before]
    return CheckResult(
        "CPU progress on every CPU", bool(obs.progress) and not stalled,
        {p.cpu: p.before for p in obs.progress}, {p.cpu: p.after for p in obs.progress},
        f"busy heartbeat numbers by CPU before and after; stalled: {stalled or 'none'}",
    )


def _ipis(obs: Observations, limits: Limits) -> CheckResult:
    pairs = obs.ipi.pairs
    lost = [f"{p.from_cpu}->{p.to_cpu}" for p in pairs if p.ticks < 0]
    expected = len(parse_cpu_list(obs.probe_before.cpus_online))
    complete = len(pairs) == expected * (expected - 1)
    return CheckResult(
        "IPIs delivered between every pair of CPUs", complete and not lost,
        f"{expected * (expected - 1)} pairs answered",
        {f"{p.from_cpu}->{p.to_cpu}": p.ticks for p in pairs},
        f"cross-CPU futex wake-up round trips in timebase ticks; lost: {lost or 'none'}",
    )


def _tb_backwards(obs: Observations, limits: Limits) -> CheckResult:
    worst = {c.cpu: c.max_back for c in obs.timebase.cpus if c.max_back}
    tick_back = [g.cpu for g in obs.tick_gaps if g.gap is not None and g.gap < 0]
    return CheckResult(
        "timebase never goes backwards", not worst and not tick_back, 0,
        f"watcher max backward step by CPU: {worst or 'none'}; tick timebase backwards on CPUs: "
        f"{tick_back or 'none'}",
        "per-CPU mftb watcher since tbreset, and each CPU's ticks across the migration",
    )


def timebase_jump(cpus: Sequence[CpuTbStats]) -> int | None:
    """The machine's timebase jump the watchers saw: the smallest of the CPUs' largest forward
    steps (None without a CPU that sampled).

    Every CPU that sampled across a migration has the migration's jump as one of its steps, so
    the jump is at most each CPU's largest step. A CPU whose largest step is bigger did not
    sample for that long while another CPU did (its spinner did not run: a scheduling stall,
    which the progress and tick checks judge); a jump of one CPU's timebase alone is an offset
    between CPUs, which the cross-CPU checks judge. With one CPU the two cannot be told apart
    and its largest step counts.
    """
    steps = [c.max_fwd for c in cpus if c.samples > 0]
    return min(steps) if steps else None


def jump_evidence(cpus: Sequence[CpuTbStats], freq: int) -> dict[int, str]:
    """Each CPU's largest forward step, in ticks and ms, and where it ended."""
    return {c.cpu: f"{c.max_fwd} ticks ({c.max_fwd * 1000 / freq:.1f} ms) ending at tb {c.max_fwd_at}"
            for c in cpus if c.samples > 0}


def _tb_jump(obs: Observations, limits: Limits) -> CheckResult:
    bound_ms = obs.downtime_ms + limits.tb_slack_ms
    freq = obs.probe_before.tb_freq
    bound_ticks = bound_ms * freq // 1000
    jump = timebase_jump(obs.timebase.cpus)
    idle = [c.cpu for c in obs.timebase.cpus if c.samples == 0]
    return CheckResult(
        "timebase forward jump within bound", jump is not None and not idle and jump <= bound_ticks,
        f"<= {bound_ticks} ticks ({obs.downtime_ms} ms downtime + {limits.tb_slack_ms} ms slack)",
        "not measured" if jump is None else f"{jump} ticks ({jump * 1000 / freq:.1f} ms)",
        "the timebase's jump: the smallest of the CPUs' largest forward mftb steps between "
        f"consecutive watcher samples (a larger one is that CPU not sampling); per CPU: "
        f"{jump_evidence(obs.timebase.cpus, freq)}" + (f"; no samples on CPUs {idle}" if idle else ""),
    )


def _tb_advanced(obs: Observations, limits: Limits) -> CheckResult:
    before, after = obs.probe_before.tb, obs.probe_after.tb
    return CheckResult("timebase advanced across migration", after > before, before, after,
                       "mftb in the probe before (source) and after (destination)")


def _threads_on_cpus(obs: Observations, limits: Limits) -> CheckResult:
    astray = [f"{t.role}{t.cpu} ran on {t.ran_on}" for t in obs.probe_after.threads
              if t.ran_on != t.cpu]
    return CheckResult("agent threads run on their CPUs", bool(obs.probe_after.threads) and not astray,
                       "each per-CPU thread on its pinned CPU", astray or "all",
                       "probe after migration: pinned CPU vs sched_getcpu() of each thread")


def _same(name: str, field: str, evidence: str) -> Check:
    def check(obs: Observations, limits: Limits) -> CheckResult:
        return _equal(name, getattr(obs.probe_before, field), getattr(obs.probe_after, field), evidence)
    return check


GENERIC: dict[str, Check] = {
    "source is postmigrate": _status,
    "destination is running": _running,
    "timer ticks on schedule": _ticks,
    "CPU progress on every CPU": _progress,
    "IPIs delivered between every pair of CPUs": _ipis,
    "timebase never goes backwards": _tb_backwards,
    "timebase forward jump within bound": _tb_jump,
    "timebase advanced across migration": _tb_advanced,
    "timebase frequency": _same("timebase frequency", "tb_freq", "/proc/cpuinfo timebase"),
    "interrupt controller": _same("interrupt controller", "intc", "/proc/interrupts"),
    "online CPUs": _same("online CPUs", "cpus_online", "/sys/devices/system/cpu/online"),
    "agent threads run on their CPUs": _threads_on_cpus,
    "PCI devices and BARs": _same("PCI devices and BARs", "pci", "/sys/bus/pci/devices/*/resource"),
    "PHB ranges": _same("PHB ranges", "phb_ranges", "/proc/device-tree/pci@*/ranges"),
}
"""Every generic check by name, in the order a reader wants them."""


def generic_checks(obs: Observations, limits: Limits, without: Collection[str] = ()) -> list[CheckResult]:
    """Every generic check but those named in ``without`` (a name that is not a check is an error,
    so a typo cannot silently drop a check)."""
    unknown = set(without) - set(GENERIC)
    if unknown:
        raise ConfigError("checks", ", ".join(sorted(unknown)), f"no such generic check; known: "
                          f"{', '.join(GENERIC)}")
    return [check(obs, limits) for name, check in GENERIC.items() if name not in without]


def require_all(results: list[CheckResult]) -> None:
    """Raise :class:`CheckFailed` for the first failed invariant, naming all that failed."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return
    first = failed[0]
    others = "; ".join(r.invariant for r in failed[1:])
    evidence = first.evidence + (f" (also failed: {others})" if others else "")
    raise CheckFailed(first.invariant, first.before, first.after, evidence)


def _equal(invariant: str, before: object, after: object, evidence: str) -> CheckResult:
    return CheckResult(invariant, before == after, before, after, evidence)

