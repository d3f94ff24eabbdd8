"""phb: PCI host bridge windows across a migration (the default PHB and one with explicit windows).

Guards against a guest that wakes up on a destination whose PHB windows are
not the ones its device tree describes: the guest keeps the ``ranges`` (and
the BARs inside them) it read at boot, so its MMIO then reaches nothing. QEMU
itself does not catch it: from pseries-2.8 on, only ``buid`` is compared on
load; pseries-2.7 (whose 64-bit MMIO window is the top of one large "32-bit"
window, split at 2 GiB) still sends the window fields QEMU 2.7 compared
(``mig_mem_win_addr`` ...), but QEMU 2.8 and later load them without looking
(hw/ppc/spapr_pci.c ``vmstate_spapr_pci``, ``spapr_pci_pre_save``; window
placement in hw/ppc/spapr.c ``spapr_phb_placement`` / ``phb_placement_2_7``).

A second ``spapr-pci-host-bridge`` (index 1) with explicit window sizes and a
``virtio-rng-pci`` on it joins the default PHB (and the matrix's device on
it). Window addresses come from the machine type's placement, not from
properties (no build has ``mem_win_addr``); the I/O window QEMU maps is
always 64 KiB, ``io_win_size`` only travels in the pre-2.8 field. Variants:
``windows`` (32-bit, 64-bit and I/O windows each given; pseries-2.8 and newer:
2.7's placement sets no 64-bit window address) and ``split`` (one large
memory window that QEMU splits into 2 GiB 32-bit plus a contiguous 64-bit
window, the pre-2.8 layout; every machine type).

Own checks, measured before the generic tick check: the guest sees two PHBs
with a device each; the windows its device tree describes are exactly those
the source QEMU maps (``info mtree``) and exactly those the destination maps;
the stream's PHB sections are the destination's PHBs, and carry the pre-2.8
fields exactly where the machine type sends them, with the values the
destination's windows give; the guest's assigned memory BARs lie in their
PHB's windows on the destination (listed only where the guest assigned any:
under VOF, pseries-2.8's kernel leaves a driverless device's BARs unassigned,
SLOF and newer machine types assign them). Then every generic check,
including the guest's PHB ranges and BARs unchanged, and both PHBs' virtio-rng read on the
destination with their MSIs delivered (device traffic). One vCPU, on purpose
(IPIs are then not applicable): every Debian build loses a second CPU after
an incoming migration (7.2 and 5.2 its decrementer, 10.0 CPU 1 "RTAS
stopped"), and on a 10.0 destination the 2-CPU guest then stops answering,
so the generic checks after the windows would go unmeasured there; with one
CPU they are measured on every pair. These cells move to the 2-CPU guest when
a healthy pair exists (a reference build with those fixes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import Observations
from harness.checks.result import CheckResult, Limits
from harness.guest.protocol import Probe
from harness.qemu.memmap import Window, hmp, phb_windows
from harness.scenarios.declare import MachineChange, Needs, Scenario, Variant
from harness.scenarios.measured import Landed, land, own_first, the_rest
from harness.scenarios.steps import boot, start_pair
from harness.stream.phb import PhbFields, phb_fields

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext

BASE_BUID = 0x800000020000000
"""The BUID of PHB index 0 (spapr.c placement); index N has BASE_BUID + N."""
PRE_2_8 = (2, 8)
"""Machine types older than this send the pre-2.8 PHB fields (pre-2.8-migration=on)."""
IORESOURCE_MEM, IORESOURCE_UNSET = 0x200, 0x20000000
"""Flags of a BAR in /sys/bus/pci/devices/*/resource (include/linux/ioport.h)."""
_SPACE = {1: "io", 2: "mmio32", 3: "mmio64"}
"""Space code of a PCI address's high cell (bits 24-25) to the window it lies in."""


@dataclass(frozen=True)
class PhbWindows:
    """The extra PHB's window sizes as given on the command line (0: QEMU splits, see split)."""

    mem_win_size: int
    mem64_win_size: int
    io_win_size: int = 0x10000

    def devices(self) -> tuple[str, ...]:
        return (f"spapr-pci-host-bridge,index=1,id=phb1,mem_win_size={self.mem_win_size:#x},"
                f"mem64_win_size={self.mem64_win_size:#x},io_win_size={self.io_win_size:#x}",
                "virtio-rng-pci,bus=phb1.0")


def guest_windows(probe: Probe) -> tuple[Window, ...]:
    """The windows each ``/proc/device-tree/pci@*/ranges`` describes (hi, child, parent, size)."""
    found = []
    for node, hexed in probe.phb_ranges.items():
        raw = bytes.fromhex(hexed)
        for at in range(0, len(raw) - len(raw) % 28, 28):
            hi = int.from_bytes(raw[at:at + 4], "big")
            pci, cpu, size = (int.from_bytes(raw[at + k:at + k + 8], "big") for k in (4, 12, 20))
            if size:
                found.append(Window(node, _SPACE.get(hi >> 24 & 3, f"space {hi >> 24 & 3}"), cpu, pci, size))
    return tuple(sorted(found))


def assigned_bars(probe: Probe) -> list[tuple[str, int, int]]:
    """Each assigned memory BAR the guest sees: (device address, first, last CPU address)."""
    bars = []
    for dev in probe.pci:
        for bar in dev.bars:
            span, flags = bar.split()
            start, end = (int(x, 16) for x in span.split("-"))
            if int(flags, 16) & IORESOURCE_MEM and not int(flags, 16) & IORESOURCE_UNSET and start:
                bars.append((dev.addr, start, end))
    return bars


def _inside(start: int, end: int, addr: str, windows: tuple[Window, ...]) -> bool:
    node = f"pci@{BASE_BUID + int(addr.split(':')[0], 16):x}"
    return any(w.phb == node and w.space != "io" and w.cpu <= start and end < w.cpu + w.size
               for w in windows)


def legacy_expected(buid: int, windows: tuple[Window, ...]) -> dict[str, int]:
    """The pre-2.8 fields a PHB with these windows sends (spapr_pci_pre_save), i.e. what QEMU 2.7
    compared on load."""
    node = f"pci@{buid:x}"
    by_space = {w.space: w for w in windows if w.phb == node}
    mem32, io, mem64 = by_space.get("mmio32"), by_space.get("io"), by_space.get("mmio64")
    if mem32 is None or io is None:
        return {}
    size = mem32.size + (mem64.size if mem64 and mem64.cpu == mem32.cpu + mem32.size else 0)
    return {"mig_liobn": 0x80000000 | (buid - BASE_BUID) << 8, "mig_mem_win_addr": mem32.cpu,
            "mig_mem_win_size": size, "mig_io_win_addr": io.cpu, "mig_io_win_size": io.size}


@dataclass(frozen=True)
class PhbObservations:
    before: Probe
    source_windows: tuple[Window, ...]
    destination_windows: tuple[Window, ...]
    stream: tuple[PhbFields, ...] | None
    """The stream's PHB sections; None when no stream was recorded."""
    sends_legacy: bool
    """The machine type is older than pseries-2.8 (its PHBs send the pre-2.8 fields)."""
    landed: Landed
    seen: Observations

    def checks(self, limits: Limits) -> list[CheckResult]:
        guest = guest_windows(self.before)
        own = [self._two_phbs(), CheckResult(
            "guest's PHB windows are the source's", bool(guest) and guest == self.source_windows,
            _show(guest), _show(self.source_windows),
            "device-tree ranges on the source (guest) vs the source's info mtree PHB aliases"),
            CheckResult(
            "guest's PHB windows are the destination's", bool(guest) and guest == self.destination_windows,
            _show(guest), _show(self.destination_windows),
            "device-tree ranges the guest keeps vs the destination's info mtree PHB aliases"),
            self._stream_fields()]
        bars = assigned_bars(self.before)
        if bars:  # VOF on older machine types leaves driverless devices' BARs unassigned
            outside = [f"{d} {start:#x}-{end:#x}" for d, start, end in bars
                       if not _inside(start, end, d, self.destination_windows)]
            own.append(CheckResult(
                "guest's memory BARs lie in their PHB's windows on the destination", not outside,
                f"{len(bars)} assigned memory BARs inside a memory window of their PHB",
                outside or "all", "/sys/bus/pci/devices/*/resource on the source (domain N is PHB "
                "index N) vs the destination's info mtree PHB aliases"))
        return own_first(own, self.seen, limits)

    def _two_phbs(self) -> CheckResult:
        domains = sorted({d.addr.split(":")[0] for d in self.before.pci})
        nodes = sorted(self.before.phb_ranges)
        return CheckResult("two PHBs with a PCI device each", len(nodes) == 2 and domains == ["0000", "0001"],
                           "pci@ nodes for BUID index 0 and 1; devices in domains 0000 and 0001",
                           f"nodes {nodes}; device domains {domains}",
                           "/proc/device-tree/pci@* and /sys/bus/pci/devices on the source")

    def _stream_fields(self) -> CheckResult:
        name = "stream's PHB fields agree with the destination"
        if self.stream is None:
            return CheckResult(name, False, "a recorded stream", "none recorded", "matrix keeps no stream")
        wanted = {f"pci@{s.buid:x}" for s in self.stream}
        mapped = {w.phb for w in self.destination_windows}
        problems = [] if wanted == mapped and len(self.stream) == len(mapped) else [
            f"stream PHBs {sorted(wanted)} (x{len(self.stream)}), destination maps {sorted(mapped)}"]
        for sec in self.stream:
            expect = legacy_expected(sec.buid, self.destination_windows) if self.sends_legacy else {}
            if sec.legacy != expect:
                problems.append(f"pci@{sec.buid:x}: stream {_hex(sec.legacy) or 'no pre-2.8 fields'}, "
                                f"destination {_hex(expect) or 'expects none'}")
        return CheckResult(name, bool(self.stream) and not problems,
                           "buid of each destination PHB" + (", pre-2.8 fields from its windows"
                                                             if self.sends_legacy else ", no pre-2.8 fields"),
                           [f"pci@{s.buid:x} {_hex(s.legacy)}" for s in self.stream],
                           "; ".join(problems) or "spapr_pci sections vs the destination's info mtree")


def _show(windows: tuple[Window, ...]) -> list[str]:
    return [f"{w.phb} {w.space} cpu {w.cpu:#x} pci {w.pci:#x} size {w.size:#x}" for w in windows]


def _hex(fields: dict[str, int]) -> dict[str, str]:
    return {k: hex(v) for k, v in fields.items()}


def run(ctx: ScenarioContext, variant: Variant[PhbWindows]) -> PhbObservations:
    src, dst = start_pair(ctx)
    before = boot(ctx, src, devices=True)
    source_windows = phb_windows(hmp(src, "info mtree", ctx.rundir / "src-info-mtree.txt"))
    landed = land(ctx, src, dst, before)
    with ctx.phase("check"):
        destination_windows = phb_windows(hmp(dst, "info mtree", ctx.rundir / "dst-info-mtree.txt"))
        stream = phb_fields(landed.result.stream) if landed.result.stream is not None else None
    machine = tuple(int(p) for p in ctx.setup_of("dst").machine.removeprefix("pseries-").split(".")[:2])
    return PhbObservations(before.probe, source_windows, destination_windows, stream,
                           machine < PRE_2_8, landed, the_rest(ctx, src, dst, before, landed))


def _variant(name: str, windows: PhbWindows, description: str,
             needs: Needs | None = None) -> Variant[PhbWindows]:
    return Variant(name, windows, source=MachineChange(devices=windows.devices(), smp=1, maxcpus=1),
                   needs=needs or Needs(), description=description)


SCENARIO = Scenario(
    name="phb",
    description="the default PHB and one with explicit windows: the guest's ranges are the destination's",
    run=run,
    variants=(
        _variant("windows", PhbWindows(mem_win_size=0x40000000, mem64_win_size=0x1000000000),
                 "extra PHB: 1 GiB 32-bit, 64 GiB 64-bit and 64 KiB I/O windows",
                 Needs(min_machine=PRE_2_8)),
        _variant("split", PhbWindows(mem_win_size=0x180000000, mem64_win_size=0),
                 "extra PHB: one 6 GiB memory window, split into 2 GiB 32-bit + 4 GiB 64-bit"),
    ),
)
