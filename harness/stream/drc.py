"""The spapr DRCs a recorded migration stream carries, and what state each was in.

QEMU sends a DRC (vmstate ``spapr_drc``, instance id = DRC index) only while
it is not in its ready state or an unplug was requested (hw/ppc/spapr_drc.c
``spapr_drc_needed``; ``unplug_requested`` is its subsection). The
configure-connector position (``ccs_offset``, ``ccs_depth``) and the node's
device tree are not migrated: a destination rebuilds the tree and restarts
the walk, which is why a stop inside the walk matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.stream.parser import StreamParser
from harness.stream.reader import open_stream
from harness.stream.records import DeviceState

DRC_STATES = {0: "invalid", 1: "logical unusable", 2: "logical available", 3: "logical unisolate",
              4: "logical configured", 5: "physical available", 6: "physical poweron",
              7: "physical unisolate", 8: "physical configured"}
"""SpaprDrcState (include/hw/ppc/spapr_drc.h, LoPAPR 13.4 fig. 12; "exposed in the migration
stream, so don't change them"). A logical DRC (CPU, LMB) is ready in ``configured``."""


@dataclass(frozen=True)
class Drc:
    """One DRC the stream carried (sent only while it is not in its ready state)."""

    index: int
    state: int
    unplug_requested: bool


def drcs_in(stream: Path) -> tuple[Drc, ...]:
    """The ``spapr_drc`` sections of the stream at ``stream``, in stream order."""
    found = []
    with open_stream(stream) as reader:
        for record in StreamParser(reader).records():
            if isinstance(record, DeviceState) and record.section.idstr == "spapr_drc":
                state = record.state.find("state")
                unplug = next((sub.state.find("unplug_requested") for sub in record.state.subsections
                               if sub.name == "spapr_drc/unplug_requested"), None)
                found.append(Drc(record.section.instance_id,
                                 state.value if state and isinstance(state.value, int) else -1,
                                 bool(unplug.value) if unplug else False))
    return tuple(found)
