"""Judging a time bound with the host's starvation in mind: a loaded host is not a QEMU bug."""

from __future__ import annotations

import enum
import math


class Judgement(enum.StrEnum):
    """What a measured time says against its bound (compares equal to its string value)."""

    WITHIN = "within"
    EXCEEDED = "exceeded"
    HOST_OVERLOADED = "host-overloaded"


def judge(measured_ms: float | None, bound_ms: float, starvation_ms: float | None) -> Judgement:
    """``measured_ms`` (None: the thing never happened) against ``bound_ms``, given that the host
    kept the CPU in question waiting ``starvation_ms`` in the same window (None: not measured).

    * within: ``measured_ms <= bound_ms``.
    * host-overloaded: the bound is exceeded by no more than the starvation. A vCPU thread
      that sat runnable on a host run queue for S ms can have made the guest late by up to S ms
      without QEMU doing anything wrong, so such an excess says nothing about QEMU: the bound
      was not measured, and the cell must not be reported as a product failure.
    * exceeded: the excess is larger than the starvation (or the starvation is unknown): the
      host's waiting cannot account for it, so the lateness is QEMU's (or the guest's).

    A CPU stopped for good (``measured_ms`` None: the tick or beat never came) is exceeded
    however loaded the host: starvation delays a thread by a finite, measured amount and then
    it runs; it cannot explain something that never happens. Excusing it would hide exactly
    the lost-interrupt and stopped-CPU bugs the checks are for. Unknown or non-finite
    starvation excuses nothing.
    """
    if measured_ms is None or math.isnan(measured_ms):
        return Judgement.EXCEEDED
    if measured_ms <= bound_ms:
        return Judgement.WITHIN
    if starvation_ms is None or not math.isfinite(starvation_ms) or starvation_ms <= 0:
        return Judgement.EXCEEDED
    if measured_ms - bound_ms <= starvation_ms:
        return Judgement.HOST_OVERLOADED
    return Judgement.EXCEEDED
