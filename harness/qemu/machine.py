"""What both sides of a migration are started with: machine options and guest devices.

Options come from introspection of both builds, so a cell asks only for what
both builds have, and both sides get exactly the same command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.builds.model import MachineInfo

# spapr capabilities TCG cannot provide. QEMU names the fix when one is wrong
# ("TCG doesn't support requested feature, cap-cfpc=workaround"); each is set
# only where both builds' machine type has the property.
TCG_CAP_SETTINGS: tuple[tuple[str, str], ...] = (
    ("cap-cfpc", "broken"),
    ("cap-sbbc", "broken"),
    ("cap-ibs", "broken"),
    ("cap-ccf-assist", "off"),
    ("cap-htm", "off"),
)


@dataclass(frozen=True)
class Dimm:
    """A pc-dimm on its RAM backend: the same device whether QMP, a command line or libvirt
    plugs it (libvirt names it by the user alias ``ua-<id>``)."""

    id: str
    memdev: str
    size_mb: int

    def object_arg(self) -> str:
        return f"memory-backend-ram,id={self.memdev},size={self.size_mb}M"

    def device_arg(self) -> str:
        return f"pc-dimm,id={self.id},memdev={self.memdev}"


@dataclass(frozen=True)
class MachineSetup:
    """Everything that must be identical on source and destination."""

    machine: str
    properties: tuple[tuple[str, str], ...]
    firmware: str
    accel: str
    cpu: str
    memory_mb: int
    smp: int
    maxcpus: int
    devices: tuple[str, ...]
    kernel: Path
    initrd: Path
    append: str
    maxmem_mb: int | None = None
    """With ``memory_slots``: room for memory hotplug (``-m size,slots=N,maxmem=M``)."""
    memory_slots: int = 0
    dimms: tuple[Dimm, ...] = ()
    """DIMMs present from the start (a destination given the DIMM its source was plugged)."""

    def memory_arg(self) -> str:
        if self.maxmem_mb is None:
            return str(self.memory_mb)
        return f"{self.memory_mb},slots={self.memory_slots},maxmem={self.maxmem_mb}M"

    def machine_arg(self) -> str:
        return ",".join([self.machine, *(f"{k}={v}" for k, v in self.properties)])


def common_properties(
    src: MachineInfo, dst: MachineInfo, *, caps: tuple[tuple[str, str], ...], firmware: str,
    extra: dict[str, str],
) -> tuple[tuple[tuple[str, str], ...], str]:
    """Machine properties valid on both sides, and the firmware actually used.

    ``firmware``: ``vof`` (QEMU's Virtual Open Firmware, boots in ~2 s under
    TCG), ``slof``, or ``auto`` (vof where both builds have it, else slof).
    """
    both = src.properties & dst.properties
    props = [(cap, value) for cap, value in caps if cap in both]
    used = "slof"
    if firmware in ("auto", "vof") and "x-vof" in both:
        props.append(("x-vof", "on"))
        used = "vof"
    props += sorted(extra.items())
    return tuple(props), used
