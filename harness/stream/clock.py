"""Set a stream's clocks back: the virtual clock a TCG guest's timebase follows, and the
spapr ``guest_timebase`` a KVM guest's timebase resumes from.

Under TCG a pseries guest's ``mftb`` is QEMU's virtual clock scaled to the
timebase frequency plus a per-CPU ``tb_offset`` that no stream carries
(hw/ppc/ppc.c ``cpu_ppc_get_tb``; spapr applies the migrated ``guest_timebase``
only under KVM). The virtual clock travels in the ``timer`` section as
``cpu_clock_offset`` (softmmu/cpu-timers.c ``vmstate_timers``, the clock's
value while the machine was stopped), so lowering it makes every CPU's
timebase go back by the same amount on the destination: how a project test
proves that the timebase checks fail when the timebase really goes backwards.

Under KVM the destination sets the guest's timebase from spapr's ``tb``
(``vmstate_ppc_timebase``: ``guest_timebase``, hw/ppc/ppc.c
``timebase_post_load``), so that value is set back too, in timebase ticks.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from harness.stream.errors import StreamError
from harness.stream.parser import iter_records
from harness.stream.records import DeviceState
from harness.stream.values import StructValue

SECTION = "timer"
FIELD = "cpu_clock_offset"
SPAPR = "spapr"
TB_FREQ = 512_000_000
"""pseries' timebase frequency (hw/ppc/spapr.c ``SPAPR_TIMEBASE_FREQ``)."""


def rewind_clock(stream: Path, out: Path, by_ns: int) -> int:
    """Copy ``stream`` to ``out`` with the virtual clock ``by_ns`` nanoseconds earlier, and
    spapr's ``guest_timebase`` as many timebase ticks earlier; returns the virtual clock as the
    source saved it (ns). StreamError if the stream has no decoded timer field."""
    clock = None
    patches: list[tuple[int, bytes]] = []
    for record in iter_records(stream):
        if not isinstance(record, DeviceState):
            continue
        if record.section.idstr == SECTION:
            field = record.state.find(FIELD)
            if field is None or field.size != 8 or not isinstance(field.value, int):
                break
            clock = field.value
            patches.append((field.offset, struct.pack(">q", field.value - by_ns)))
        elif record.section.idstr == SPAPR and (tb := record.state.find("tb")) is not None:
            guest = tb.value.find("guest_timebase") if isinstance(tb.value, StructValue) else None
            if guest is not None and guest.size == 8 and isinstance(guest.value, int):
                ticks = by_ns * TB_FREQ // 1_000_000_000
                patches.append((guest.offset, struct.pack(">Q", max(0, guest.value - ticks))))
    if clock is not None:
        shutil.copyfile(stream, out)
        with out.open("r+b") as f:
            for offset, data in patches:
                f.seek(offset)
                f.write(data)
        return clock
    raise StreamError(f"no {SECTION} section with an 8-byte {FIELD} decoded (no vmdesc?)", 0, SECTION,
                      str(stream))
