"""The timebase a hop's stream carried (spapr's ``tb``), against the guest's own readings.

Under KVM the destination sets the guest's timebase from the migrated ``guest_timebase``
(hw/ppc/ppc.c ``timebase_post_load``: that value plus the time since the source saved it,
at most a second), which the source saved when it stopped (``cpu_ppc_clock_vm_state_change``,
registered by spapr only with KVM). So each CPU's last timer tick on the source must be no
newer than the value in the stream, and its first tick on the destination no later than
the tick schedule's bound after it. (A first tick on the destination older than the value
is not a fault: the guest's hvc driver buffers console output, so a tick made on the
source can be printed after the migration; seen under load on nested KVM.) This sees the
cause (a wrong value in the stream, or one the destination ignored) where the guest-side
checks see only its effect. Under TCG the destination never applies it, so only ``kvm:``
cells list this check (:data:`harness.checks.generic.KVM_ONLY`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.checks.result import CheckResult, Limits, not_measured
from harness.stream import StreamError, summarise

NAME = "migrated timebase resumed on the destination"


@dataclass(frozen=True)
class CpuTicks:
    """One CPU's mftb at its last tick on the source and first on the destination (None: none)."""

    cpu: int
    last_before: int
    first_after: int | None


@dataclass(frozen=True)
class MigratedTimebase:
    """One hop's ``guest_timebase`` as the recorded stream carried it (None: why in ``unread``)."""

    value: int | None
    unread: str = ""


@cache
def migrated_timebase(stream: Path | None) -> MigratedTimebase:
    """The spapr ``guest_timebase`` of a recorded stream (parsed once per file)."""
    if stream is None:
        return MigratedTimebase(None, "the stream was not recorded (reports.keep_streams: none)")
    try:
        summary = summarise(stream)
    except StreamError as exc:
        return MigratedTimebase(None, f"the recorded stream could not be read: {exc}")
    if summary.spapr is None or summary.spapr.timebase is None:
        return MigratedTimebase(None, "the recorded stream has no spapr tb (guest_timebase) decoded")
    return MigratedTimebase(summary.spapr.timebase.guest_timebase)


def migrated_timebase_check(hops: tuple[tuple[MigratedTimebase, tuple[CpuTicks, ...], int], ...],
                            tb_freq: int, limits: Limits, stall: str) -> CheckResult:
    """Per hop (the stream's timebase, every CPU's ticks across it, QEMU's downtime): each
    CPU's last tick on the source is no newer than the migrated value, and its first on the
    destination came within the tick schedule's bound after it. The source side is judged
    even when a CPU did not tick on the destination (a timebase set back stops the guest's
    timer: seen with a 10 s rewind); only when nothing failed does such a CPU leave the check
    not measured, caused by ``stall``."""
    bound = ("each CPU's last tick on the source <= guest_timebase, its first on the destination "
             "<= guest_timebase + one period + downtime + slack")
    measured, failed, silent, evidence = [], [], [], []
    for number, (migrated, gaps, downtime_ms) in enumerate(hops, 1):
        if migrated.value is None:
            return not_measured(NAME, f"hop {number}: {migrated.unread}", bound=bound)
        late_ticks = limits.gap_bound_ms(downtime_ms) * tb_freq // 1000
        value = migrated.value
        for gap in gaps:
            line = (f"hop {number} CPU {gap.cpu}: last tick on the source "
                    f"{(value - gap.last_before) * 1000 / tb_freq:.1f} ms before it, ")
            if gap.first_after is None:
                line += "no tick on the destination"
                silent.append(line)
            else:
                after_ms = (gap.first_after - value) * 1000 / tb_freq
                line += f"first on the destination {after_ms:.1f} ms after it"
                measured.append(line)
            if gap.last_before > value:
                failed.append(f"{line}: the stream's timebase is older than the guest's last reading")
            elif gap.first_after is not None and gap.first_after - value > late_ticks:
                failed.append(f"{line}: later than {limits.gap_bound_ms(downtime_ms)} ms (tick period "
                              "+ downtime + slack): the destination did not resume from it")
        evidence.append(f"hop {number}: guest_timebase {value} in the recorded stream")
    if silent and not failed:
        return not_measured(NAME, "; ".join(silent), bound=bound, cause=stall)
    if not measured and not failed:
        return not_measured(NAME, "no CPU ticked on the source", bound=bound)
    return CheckResult(NAME, not failed, bound, "; ".join(failed or measured),
                       "; ".join(evidence) + "; the CPUs' ticks carry the guest's mftb")
