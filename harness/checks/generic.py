"""The generic checks of a migration, and the helpers scenarios build their own checks from.

No QEMU here. A scenario composes the generic checks (:func:`generic_checks`,
leaving out some by name) with its own; every check yields one
:class:`~harness.checks.result.CheckResult` whose ``invariant`` is the check's
name. Per-CPU checks look at every CPU and name the ones that broke. A
scenario's own checks use the helpers here (:func:`ticks_on_schedule`,
:func:`ipis_delivered`, :func:`timebase_jump`, :func:`equal`, ...) rather than
measuring the same thing again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from harness.checks.devices import NAME as NAME_DEVICES
from harness.checks.devices import DeviceTraffic, devices_answer
from harness.checks.migrated_timebase import NAME as NAME_MIGRATED_TB
from harness.checks.migrated_timebase import CpuTicks, MigratedTimebase, migrated_timebase_check
from harness.checks.result import (
    HOST_OVERLOADED,
    Check,
    CheckResult,
    Limits,
    check_id,
    not_applicable,
    not_measured,
)
from harness.errors import ConfigError
from harness.guest.protocol import CpuTbStats, IpiReport, Probe, TbStats, Tick, parse_cpu_list
from harness.hostload.judge import Judgement, judge


@dataclass(frozen=True)
class TickGap:
    """One CPU's timer ticks around the last hop: the last on the source, the first after."""

    cpu: int
    last_before: Tick
    first_after: Tick | None
    waited_ms: int
    """How long the harness waited on the destination for ``first_after`` (wall time)."""
    starved_ms: float | None = None
    """How long the host kept this CPU's vCPU threads waiting for a host CPU around the hop
    (source and destination); None when not measured."""
    host: str = ""
    """The host's figures around the hop, as evidence."""
    timer_resumed: bool | None = None
    """Whether the CPU's next tick after ``first_after`` came too, on schedule: only that one
    proves the destination's timer, as its sleep began there, while ``first_after`` can end a
    sleep the source's timer ended just before the stop (written once the destination ran).
    None when not waited for (no ``first_after``)."""
    next_waited_ms: int = 0
    """How long the harness waited for that next tick after seeing ``first_after``."""

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


def missed_tick(gaps: Iterable[TickGap]) -> list[int]:
    """The CPUs, in ``gaps``' order, whose first tick after the hop, or the one after it, never
    came."""
    return [g.cpu for g in gaps if g.first_after is None or g.timer_resumed is False]


STALL = "timer-ticks-on-schedule"
"""The check whose failure (a CPU with no tick) explains what a silent guest left unmeasured."""


@dataclass(frozen=True)
class Observations:
    """What a migrating scenario saw: both sides' status, probes, and every CPU's heartbeats.

    A field is None when the guest did not answer for it (``silence`` says why); the checks on
    it are then not measured, with the stall (a CPU that missed its tick) as their cause when
    there was one.
    """

    load: str
    """The guest's load mode while it migrated: idle, busy or timer."""
    probe_before: Probe
    probe_after: Probe | None
    timebase: TbStats | None
    """Per-CPU watcher statistics on the destination since the reset before the migration."""
    downtime_ms: int
    """QEMU's reported downtime (the largest, over several hops)."""
    source_status: str
    destination_status: str
    hop_gaps: tuple[tuple[TickGap, ...], ...]
    """Every CPU's tick gap, per hop."""
    progress: tuple[Progress, ...]
    ipi: IpiReport | None
    silence: str = ""
    """Why the guest left fields unanswered (empty: it answered everything)."""
    woken: str = ""
    """How the harness woke a guest whose CPUs missed their ticks, to measure the rest."""
    accel: str = "tcg"
    migrated: tuple[MigratedTimebase, ...] = ()
    """Per hop under KVM: the spapr timebase its recorded stream carried (not read under TCG,
    whose cells do not list the check)."""
    hop_downtimes_ms: tuple[int, ...] = ()
    devices: DeviceTraffic | None = None
    """The virtio-rng reads before and after, in the scenarios that read them (None: not read,
    and the cell does not list the check)."""

    @property
    def tick_gaps(self) -> tuple[TickGap, ...]:
        return tuple(g for hop in self.hop_gaps for g in hop)

    @property
    def stalled(self) -> bool:
        return bool(missed_tick(self.tick_gaps))

    def unanswered(self, name: str, what: str, bound: object = "") -> CheckResult:
        """``name`` not measured: the guest did not answer ``what`` (because a CPU missed its tick,
        or else because the guest stopped answering)."""
        return not_measured(name, f"the guest did not answer {what}: {self.silence or 'no reply'}",
                            bound=bound, cause=STALL if self.stalled else check_id(ANSWERS))

    def checks(self, limits: Limits) -> list[CheckResult]:
        return generic_checks(self, limits)


def _status(obs: Observations, limits: Limits) -> CheckResult:
    return equal("source is postmigrate", "postmigrate", obs.source_status, "query-status on source")


def _running(obs: Observations, limits: Limits) -> CheckResult:
    return equal("destination is running", "running", obs.destination_status,
                 "query-status on destination")


def ticks_on_schedule(gaps: tuple[TickGap, ...], downtime_ms: int, tb_freq: int,
                      limits: Limits) -> CheckResult:
    """Every CPU ticked again across the migration within the tick period plus QEMU's downtime
    plus the slack (in guest timebase), or names the CPUs that did not."""
    bound_ms = limits.gap_bound_ms(downtime_ms)
    bound = (f"every CPU's tick gap <= {bound_ms} ms ({limits.tick_period_ms} ms period + "
             f"{downtime_ms} ms downtime + {limits.tb_slack_ms} ms slack)")
    if not gaps:
        return not_measured("timer ticks on schedule", "no CPU ticked on the source", bound=bound)
    late, starved = [], []
    for gap in gaps:
        gap_ms = None if gap.gap is None else gap.gap * 1000 / tb_freq
        verdict = judge(gap_ms, bound_ms, gap.starved_ms)
        if gap.first_after is None:
            late.append(f"CPU {gap.cpu}: no tick after #{gap.last_before.n} within {gap.waited_ms} ms "
                        "of the destination resuming")
        elif gap.timer_resumed is False:
            late.append(f"CPU {gap.cpu}: no tick after #{gap.first_after.n} within {gap.next_waited_ms} ms "
                        f"of it (its first on the destination, {gap_ms:.0f} ms after #{gap.last_before.n}: "
                        "a sleep the source's timer ended; the destination's timer never fired)")
        elif verdict is Judgement.EXCEEDED:
            late.append(f"CPU {gap.cpu}: tick #{gap.last_before.n} to #{gap.first_after.n} took "
                        f"{gap_ms:.0f} ms of timebase")
        elif verdict is Judgement.HOST_OVERLOADED:
            starved.append(f"CPU {gap.cpu}: {gap_ms:.0f} ms, over the bound by no more than its vCPU "
                           f"threads waited for a host CPU ({gap.starved_ms:.0f} ms)")
    shown = ", ".join(f"CPU {g.cpu} " + ("none" if g.gap is None else f"{g.gap * 1000 / tb_freq:.0f} ms")
                      for g in gaps)
    host = "; ".join(dict.fromkeys(g.host for g in gaps if g.host))
    if starved and not late:
        return not_measured("timer ticks on schedule", f"host overloaded: gaps: {shown}; "
                            f"{'; '.join(starved)}; {host}", bound=bound, cause=HOST_OVERLOADED)
    return CheckResult(
        "timer ticks on schedule", not late, bound, f"gaps: {shown}",
        ("; ".join(late) or "each CPU's last tick on the source and first on the destination (timebase), "
         "and the next one on the destination within a period and the slack")
        + (f"; host: {host}" if host else ""),
    )


def _ticks(obs: Observations, limits: Limits) -> CheckResult:
    results = [ticks_on_schedule(gaps, obs.downtime_ms, obs.probe_before.tb_freq, limits)
               for gaps in obs.hop_gaps]
    if len(results) == 1:
        return results[0]
    failed = [(n, r) for n, r in enumerate(results, 1) if not r.ok]
    return CheckResult(
        "timer ticks on schedule", not failed, results[0].before,
        "; ".join(f"hop {n}: {r.after}" for n, r in enumerate(results, 1)),
        "; ".join(f"hop {n}: {r.evidence}" for n, r in (failed or list(enumerate(results, 1)))),
    )


ANSWERS = "guest answers after the migration"


def _answers(obs: Observations, limits: Limits) -> CheckResult:
    """The agent answered every request after the migration. A guest silent after a CPU missed
    its tick is that stall's consequence (not measured, caused by it); silent otherwise, it is a
    finding of its own."""
    if obs.silence and obs.stalled:
        return not_measured(ANSWERS, f"after the stall: {obs.silence}", cause=STALL)
    return CheckResult(ANSWERS, not obs.silence, "every request answered", obs.silence or "answered",
                       "the agent's replies on the destination's console")


def _progress(obs: Observations, limits: Limits) -> CheckResult:
    name = "CPU progress on every CPU"
    if not obs.progress:
        return obs.unanswered(name, "the switch to load mode busy")
    stalled = [p.cpu for p in obs.progress if p.after is None or p.after <= p.before]
    return CheckResult(
        name, not stalled,
        {p.cpu: p.before for p in obs.progress}, {p.cpu: p.after for p in obs.progress},
        f"busy heartbeat numbers by CPU before and after; stalled: {stalled or 'none'}"
        + (f"; {obs.woken}" if obs.woken else ""),
    )


def ipis_delivered(obs: Observations, cpus: int) -> CheckResult:
    """Every ordered pair of ``cpus`` CPUs answered a cross-CPU wake-up in ``obs``'s IPI report
    (not applicable with one CPU: there is no pair). The generic check counts the CPUs online
    before the migration; a scenario that changes them (hotplug) counts its own."""
    name = "IPIs delivered between every pair of CPUs"
    expected = cpus * (cpus - 1)
    if cpus < 2:
        return not_applicable(name, f"{cpus} CPU online: no pair of CPUs to send IPIs between")
    if obs.ipi is None:
        return obs.unanswered(name, "ipi", f"{expected} pairs answered")
    pairs = obs.ipi.pairs
    lost = [f"{p.from_cpu}->{p.to_cpu}" for p in pairs if p.ticks < 0]
    return CheckResult(
        name, len(pairs) == expected and not lost, f"{expected} pairs answered",
        {f"{p.from_cpu}->{p.to_cpu}": p.ticks for p in pairs},
        f"cross-CPU futex wake-up round trips in timebase ticks; lost: {lost or 'none'}"
        + (f"; {obs.woken}" if obs.woken else ""),
    )


def _ipis(obs: Observations, limits: Limits) -> CheckResult:
    return ipis_delivered(obs, len(parse_cpu_list(obs.probe_before.cpus_online)))


def _tb_backwards(obs: Observations, limits: Limits) -> CheckResult:
    """No CPU's mftb went back: its watcher (busy mode: every sample) and its ticks' own timebase
    stamps across each hop (every mode)."""
    name = "timebase never goes backwards"
    crossed = [g for g in obs.tick_gaps if g.gap is not None]
    watched = [c for c in obs.timebase.cpus if c.samples] if obs.timebase else []
    if not crossed and not watched:
        return not_measured(name, "no CPU ticked across the migration and no watcher sampled",
                            bound=0, cause=STALL if obs.stalled else None)
    worst = {c.cpu: c.max_back for c in watched if c.max_back}
    tick_back = [g.cpu for g in crossed if g.gap is not None and g.gap < 0]
    return CheckResult(
        name, not worst and not tick_back, 0,
        f"watcher max backward step by CPU: {worst or 'none'}; tick timebase backwards on CPUs: "
        f"{tick_back or 'none'}",
        f"per-CPU mftb watcher since tbreset ({len(watched)} CPUs sampled); the timebase stamps of "
        f"each CPU's ticks across each hop ({len(crossed)} crossings)",
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


def tick_jump(gaps: Sequence[TickGap], period_ticks: int) -> int | None:
    """The timebase's jump across one hop from the ticks' own stamps: the smallest, over the
    CPUs that ticked across it, of the gap less one tick period (a tick sleeps one period, so
    the rest of its gap is the jump plus its wake-up latency: an upper bound of the jump)."""
    over = [g.gap - period_ticks for g in gaps if g.gap is not None]
    return max(0, min(over)) if over else None


def _tb_jump(obs: Observations, limits: Limits) -> CheckResult:
    """Busy guests: the watchers' jump (every sample); other modes: each hop's ticks' stamps."""
    name = "timebase forward jump within bound"
    bound_ms = obs.downtime_ms + limits.tb_slack_ms
    freq = obs.probe_before.tb_freq
    bound_ticks = bound_ms * freq // 1000
    bound = f"<= {bound_ticks} ticks ({obs.downtime_ms} ms downtime + {limits.tb_slack_ms} ms slack)"
    sampled = obs.timebase is not None and any(c.samples for c in obs.timebase.cpus)
    if obs.load == "busy" and obs.timebase is not None and sampled:
        jump = timebase_jump(obs.timebase.cpus)
        idle = [c.cpu for c in obs.timebase.cpus if c.samples == 0]
        if (overloaded := jump_overloaded(name, obs.timebase.cpus, freq, bound_ms, obs.tick_gaps, bound)):
            return overloaded
        return CheckResult(
            name, jump is not None and not idle and jump <= bound_ticks, bound,
            f"{jump} ticks ({(jump or 0) * 1000 / freq:.1f} ms)",
            "the timebase's jump: the smallest of the CPUs' largest forward mftb steps between "
            f"consecutive watcher samples (a larger one is that CPU not sampling); per CPU: "
            f"{jump_evidence(obs.timebase.cpus, freq)}" + (f"; no samples on CPUs {idle}" if idle else ""),
        )
    period = limits.tick_period_ms * freq // 1000
    jumps = [tick_jump(gaps, period) for gaps in obs.hop_gaps]
    if any(j is None for j in jumps):
        unseen = [n for n, j in enumerate(jumps, 1) if j is None]
        return not_measured(name, f"no CPU ticked across hop(s) {unseen}", bound=bound,
                            cause=STALL if obs.stalled else None)
    measured = [j for j in jumps if j is not None]
    worst = max(measured)
    if worst > bound_ticks:
        hop = obs.hop_gaps[measured.index(worst)]
        cpu = min((g for g in hop if g.gap is not None), key=lambda g: g.gap or 0).cpu
        overloaded = overloaded_host(name, worst * 1000 / freq, bound_ms, cpu, obs.tick_gaps, bound)
        if overloaded is not None:
            return overloaded
    return CheckResult(
        name, worst <= bound_ticks, bound,
        ", ".join(f"hop {n}: {j} ticks ({j * 1000 / freq:.1f} ms)" for n, j in enumerate(measured, 1)),
        f"each hop's jump from the ticks' timebase stamps: the smallest over the CPUs that ticked "
        f"across it of the gap less the {limits.tick_period_ms} ms tick period (an upper bound: it "
        f"includes the tick's wake-up latency); load mode {obs.load}",
    )


def jump_overloaded(name: str, cpus: Sequence[CpuTbStats], tb_freq: int, bound_ms: int,
                    tick_gaps: Iterable[TickGap], bound: object) -> CheckResult | None:
    """``name`` not measured when the watchers' jump (:func:`timebase_jump`) exceeds the bound by
    no more than the vCPU threads of the CPU that saw it waited for a host CPU (None otherwise,
    and when a CPU did not sample: that fails the check whatever the host did)."""
    jump = timebase_jump(cpus)
    if jump is None or jump * 1000 <= bound_ms * tb_freq or any(c.samples == 0 for c in cpus):
        return None
    cpu = next(c.cpu for c in cpus if c.samples and c.max_fwd == jump)
    return overloaded_host(name, jump * 1000 / tb_freq, bound_ms, cpu, tick_gaps, bound)


def overloaded_host(name: str, measured_ms: float, bound_ms: int, cpu: int, tick_gaps: Iterable[TickGap],
                    bound: object) -> CheckResult | None:
    """``name`` not measured because ``cpu``'s vCPU threads waited for a host CPU at least as
    long as ``measured_ms`` exceeds the bound (None: the host does not account for it)."""
    gaps = [g for g in tick_gaps if g.cpu == cpu and g.starved_ms is not None]
    starved = sum(g.starved_ms or 0.0 for g in gaps) if gaps else None
    if judge(measured_ms, bound_ms, starved) is not Judgement.HOST_OVERLOADED:
        return None
    host = "; ".join(dict.fromkeys(g.host for g in gaps if g.host))
    return not_measured(name, f"host overloaded: {measured_ms:.0f} ms against {bound_ms} ms, over by no "
                        f"more than CPU {cpu}'s vCPU threads waited for a host CPU ({starved:.0f} ms); "
                        f"{host}", bound=bound, cause=HOST_OVERLOADED)


def _tb_advanced(obs: Observations, limits: Limits) -> CheckResult:
    name = "timebase advanced across migration"
    if obs.probe_after is None:
        return obs.unanswered(name, "probe")
    before, after = obs.probe_before.tb, obs.probe_after.tb
    return CheckResult(name, after > before, before, after,
                       "mftb in the probe before (source) and after (destination)")


def _threads_on_cpus(obs: Observations, limits: Limits) -> CheckResult:
    name = "agent threads run on their CPUs"
    if obs.probe_after is None:
        return obs.unanswered(name, "probe")
    astray = [f"{t.role}{t.cpu} ran on {t.ran_on}" for t in obs.probe_after.threads
              if t.ran_on != t.cpu]
    if not obs.probe_after.threads:
        return not_measured(name, "the probe listed no agent threads")
    return CheckResult(name, not astray, "each per-CPU thread on its pinned CPU", astray or "all",
                       "probe after migration: pinned CPU vs sched_getcpu() of each thread")


def _same(name: str, field: str, evidence: str) -> Check:
    def check(obs: Observations, limits: Limits) -> CheckResult:
        if obs.probe_after is None:
            return obs.unanswered(name, "probe", getattr(obs.probe_before, field))
        return equal(name, getattr(obs.probe_before, field), getattr(obs.probe_after, field), evidence)
    return check


def _migrated_tb(obs: Observations, limits: Limits) -> CheckResult:
    """The stream's timebase against every CPU's ticks, hop by hop (a hop without a stream read
    leaves the check not measured; without hops recorded, it measured nothing: not measured)."""
    hops = tuple(
        (migrated, tuple(CpuTicks(g.cpu, g.last_before.tb, g.first_after.tb if g.first_after else None)
                         for g in gaps), downtime)
        for migrated, gaps, downtime in zip(obs.migrated, obs.hop_gaps, obs.hop_downtimes_ms, strict=False))
    return migrated_timebase_check(hops, obs.probe_before.tb_freq, limits, STALL)


def _devices(obs: Observations, limits: Limits) -> CheckResult:
    traffic = obs.devices
    assert traffic is not None  # listed only where the scenario read the devices
    if traffic.after is None and obs.stalled:
        return not_measured(NAME_DEVICES, "not read: a CPU missed its tick, and the guest's device "
                            "reads wait on its timers", cause=STALL)
    if traffic.after is None:
        return obs.unanswered(NAME_DEVICES, "rng")
    return devices_answer(traffic)


GENERIC: dict[str, Check] = {
    "source is postmigrate": _status,
    "destination is running": _running,
    "timer ticks on schedule": _ticks,
    ANSWERS: _answers,
    "CPU progress on every CPU": _progress,
    "IPIs delivered between every pair of CPUs": _ipis,
    "timebase never goes backwards": _tb_backwards,
    "timebase forward jump within bound": _tb_jump,
    "timebase advanced across migration": _tb_advanced,
    NAME_MIGRATED_TB: _migrated_tb,
    "timebase frequency": _same("timebase frequency", "tb_freq", "/proc/cpuinfo timebase"),
    "online CPUs": _same("online CPUs", "cpus_online", "/sys/devices/system/cpu/online"),
    "agent threads run on their CPUs": _threads_on_cpus,
    "PCI devices and BARs": _same("PCI devices and BARs", "pci", "/sys/bus/pci/devices/*/resource"),
    "PHB ranges": _same("PHB ranges", "phb_ranges", "/proc/device-tree/pci@*/ranges"),
    NAME_DEVICES: _devices,
}
"""Every generic check by name, in the order a reader wants them. (The guest's interrupt
controller is not among them: the chip names in /proc/interrupts never change after boot, so
comparing them measured nothing; the controller's state is compared in the machine state.)"""
KVM_ONLY = frozenset({NAME_MIGRATED_TB})
"""Checks of what only KVM does (the destination applying the stream's timebase): a TCG cell
does not list them at all, as it does not list the xiveblocks-kvm variant. The device traffic
check is listed only by the scenarios that read the devices (baseline, phb, xiveblocks and PCI
hotplug: :attr:`Observations.devices`)."""


def generic_checks(obs: Observations, limits: Limits, without: Collection[str] = ()) -> list[CheckResult]:
    """Every generic check but those named in ``without`` (a name that is not a check is an error,
    so a typo cannot silently drop a check)."""
    unknown = set(without) - set(GENERIC)
    if unknown:
        raise ConfigError("checks", ", ".join(sorted(unknown)), f"no such generic check; known: "
                          f"{', '.join(GENERIC)}")
    return [check(obs, limits) for name, check in GENERIC.items()
            if name not in without and (name not in KVM_ONLY or obs.accel == "kvm")
            and (name != NAME_DEVICES or obs.devices is not None)]


def equal(invariant: str, before: object, after: object, evidence: str) -> CheckResult:
    """``invariant`` passes when ``after`` equals ``before``; both shown as they are."""
    return CheckResult(invariant, before == after, before, after, evidence)
