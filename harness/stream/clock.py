"""Set a stream's virtual clock back: the machine-wide timebase a TCG guest resumes with.

Under TCG a pseries guest's ``mftb`` is QEMU's virtual clock scaled to the
timebase frequency plus a per-CPU ``tb_offset`` that no stream carries
(hw/ppc/ppc.c ``cpu_ppc_get_tb``; spapr applies the migrated ``guest_timebase``
only under KVM). The virtual clock travels in the ``timer`` section as
``cpu_clock_offset`` (softmmu/cpu-timers.c ``vmstate_timers``, the clock's
value while the machine was stopped), so lowering it makes every CPU's
timebase go back by the same amount on the destination: how a project test
proves that the timebase checks fail when the timebase really goes backwards.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from harness.stream.errors import StreamError
from harness.stream.parser import iter_records
from harness.stream.records import DeviceState

SECTION = "timer"
FIELD = "cpu_clock_offset"


def rewind_clock(stream: Path, out: Path, by_ns: int) -> int:
    """Copy ``stream`` to ``out`` with the virtual clock ``by_ns`` nanoseconds earlier; returns
    the clock as the source saved it (ns). StreamError if the stream has no decoded timer field."""
    for record in iter_records(stream):
        if isinstance(record, DeviceState) and record.section.idstr == SECTION:
            field = record.state.find(FIELD)
            if field is None or field.size != 8 or not isinstance(field.value, int):
                break
            shutil.copyfile(stream, out)
            with out.open("r+b") as f:
                f.seek(field.offset)
                f.write(struct.pack(">q", field.value - by_ns))
            return field.value
    raise StreamError(f"no {SECTION} section with an 8-byte {FIELD} decoded (no vmdesc?)", 0, SECTION,
                      str(stream))
