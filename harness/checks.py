"""Guest-visible invariants after a migration. Pure functions of observations: no QEMU here."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import CheckFailed
from harness.guest.protocol import Busy, Probe, TbStats, Tick


@dataclass(frozen=True)
class Observations:
    """What a scenario saw: probes and heartbeats on both sides of the migration."""

    probe_before: Probe
    probe_after: Probe
    timebase: TbStats
    downtime_ms: int  # QEMU's reported downtime (the largest, over several hops)
    source_status: str
    destination_status: str
    busy_before: Busy
    busy_after: Busy
    tick_before: Tick
    tick_after: Tick

    def checks(self, tb_slack_ms: int) -> list[CheckResult]:
        return check_all(self, tb_slack_ms)


@dataclass(frozen=True)
class CheckResult:
    invariant: str
    ok: bool
    before: object
    after: object
    evidence: str


def check_all(obs: Observations, tb_slack_ms: int) -> list[CheckResult]:
    """Every invariant, in the order a reader wants them."""
    before, after = obs.probe_before, obs.probe_after
    freq = before.tb_freq
    bound_ms = obs.downtime_ms + tb_slack_ms
    bound_ticks = bound_ms * freq // 1000
    tb = obs.timebase
    return [
        _equal("source is postmigrate", "postmigrate", obs.source_status, "query-status on source"),
        _equal("destination is running", "running", obs.destination_status,
               "query-status on destination"),
        CheckResult("CPU progress (busy heartbeat advances)", obs.busy_after.n > obs.busy_before.n,
                    obs.busy_before.n, obs.busy_after.n,
                    "busy beat numbers before migration and first seen on the destination"),
        CheckResult("timer interrupts (tick heartbeat advances)", obs.tick_after.n > obs.tick_before.n,
                    obs.tick_before.n, obs.tick_after.n,
                    "tick beat numbers before migration and first seen on the destination"),
        CheckResult("timebase never goes backwards", tb.max_back == 0, 0, tb.max_back,
                    f"largest backward mftb step over {tb.samples} samples since tbreset"),
        CheckResult(
            "timebase forward jump within bound", tb.max_fwd <= bound_ticks,
            f"<= {bound_ticks} ticks ({obs.downtime_ms} ms downtime + {tb_slack_ms} ms slack)",
            f"{tb.max_fwd} ticks ({tb.max_fwd * 1000 / freq:.1f} ms) ending at tb {tb.max_fwd_at}",
            "largest forward mftb gap between consecutive watcher samples",
        ),
        CheckResult("timebase advanced across migration", after.tb > before.tb, before.tb, after.tb,
                    "mftb in the probe before (source) and after (destination)"),
        _equal("timebase frequency", before.tb_freq, after.tb_freq, "/proc/cpuinfo timebase"),
        _equal("interrupt controller", before.intc, after.intc, "/proc/interrupts"),
        _equal("online CPUs", before.cpus_online, after.cpus_online,
               "/sys/devices/system/cpu/online"),
        _equal("PCI devices and BARs", before.pci, after.pci, "/sys/bus/pci/devices/*/resource"),
        _equal("PHB ranges", before.phb_ranges, after.phb_ranges, "/proc/device-tree/pci@*/ranges"),
    ]


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
