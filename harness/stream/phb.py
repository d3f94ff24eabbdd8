"""What a stream says about each PCI host bridge: its ``spapr_pci`` section.

``vmstate_spapr_pci`` (hw/ppc/spapr_pci.c) sends ``buid`` (uint64 equal: the
destination refuses another PHB) and, only where the PHB's
``pre-2.8-migration`` property is on (machine types pseries-2.7 and older),
the fields QEMU 2.7 compared on load: ``mig_liobn``, ``mig_mem_win_addr``,
``mig_mem_win_size``, ``mig_io_win_addr``, ``mig_io_win_size``. Their
pre_save folds a 64-bit window that directly follows the 32-bit one into
``mig_mem_win_size`` (the 2.7 layout: one window split in two). QEMU 2.8 and
later load them without comparing them, so a destination whose windows differ
takes such a stream silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.stream.parser import iter_records
from harness.stream.reader import StreamSource
from harness.stream.records import DeviceState

PHB_IDSTR = "spapr_pci"
LEGACY_FIELDS = ("mig_liobn", "mig_mem_win_addr", "mig_mem_win_size", "mig_io_win_addr",
                 "mig_io_win_size")


@dataclass(frozen=True)
class PhbFields:
    """One ``spapr_pci`` section: its instance, ``buid``, and the pre-2.8 fields it carried."""

    instance_id: int
    buid: int
    legacy: dict[str, int]
    """The pre-2.8 fields by name; empty when the machine type does not send them."""


def phb_fields(source: StreamSource) -> tuple[PhbFields, ...]:
    """Every PHB section of the stream at ``source``, in stream order."""
    found = []
    for rec in iter_records(source):
        if not isinstance(rec, DeviceState) or rec.section.idstr != PHB_IDSTR:
            continue
        values = {f.name: f.value for f in rec.state.fields
                  if f.name in ("buid", *LEGACY_FIELDS) and isinstance(f.value, int)}
        found.append(PhbFields(rec.section.instance_id, values.pop("buid"), values))
    return tuple(found)
