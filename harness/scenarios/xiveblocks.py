"""xiveblocks: with XIVE, the stream's RAM blocks are exactly the destination's, and no device
memory travels as RAM.

Guards against device memory migrated as guest RAM, or RAM blocks that do not
line up: XIVE's ESB (event state buffer) and TIMA (thread interrupt management
area) pages are device memory. Under TCG QEMU emulates them as I/O regions;
under KVM they are the host's XIVE pages mapped into the guest as RAM device
regions (hw/intc/spapr_xive_kvm.c, ``memory_region_init_ram_device_ptr``),
which must never become migratable RAM blocks: the source would send host
interrupt-controller pages as guest memory, and the destination, whose pages
are its own host's, must map them afresh. The stream's block list (RAM
section, ``RAM_SAVE_FLAG_MEM_SIZE``: names and used lengths) must be exactly
the destination's RAM blocks (``info ramblock``) that are not device regions,
and none of them may be a device region of the destination (``info mtree``:
i/o, ramd, romd). A destination with another block set would drop memory (a
block missing from the stream is not loaded) or refuse the stream.

Variant ``xive`` (ic-mode=xive, pseries-4.0 and newer): those checks and the
guest keeping XIVE, then every generic check (ticks, IPIs on XIVE, the virtio-rng read with its
MSI delivered through XIVE on the destination, ...).
Variant ``kvm`` adds, on the destination, the ESB and TIMA mapped as RAM
device regions at the source's addresses (remapped from the destination's
host); it needs accel kvm with the in-kernel XIVE device, so a POWER9 or later
host, and is skipped, with that reason, elsewhere (nested KVM hosts have no in-kernel
XIVE: QEMU falls back to kernel-irqchip=off there, and its emulated XIVE maps no ESB or
TIMA pages as RAM). One vCPU, for the reason phb gives (a 2-CPU guest goes silent on a
10.0 destination, so its generic checks would go unmeasured there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import Observations, equal
from harness.checks.result import CheckResult, Limits
from harness.guest.protocol import Probe
from harness.qemu.memmap import Block, hmp, ram_blocks, region_types
from harness.scenarios.declare import MachineChange, Needs, Scenario, Variant
from harness.scenarios.measured import Landed, land, own_first, the_rest
from harness.scenarios.steps import boot, probe_after, start_pair
from harness.stream import summarise

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext

DEVICE_TYPES = frozenset({"i/o", "ramd", "romd"})
"""``info mtree`` region types that are device memory, never guest RAM."""
XIVE_PAGES = ("xive.esb", "xive.tima")
"""Name prefixes of XIVE's ESB and TIMA regions (hw/intc/spapr_xive.c, spapr_xive_kvm.c)."""


@dataclass(frozen=True)
class XiveBlocksObservations:
    kvm: bool
    """The variant checks the ESB and TIMA remapping (accel kvm only)."""
    before: Probe
    after: Probe | None
    stream_blocks: tuple[Block, ...] | None
    """The stream's block list; None when no stream was recorded."""
    destination_blocks: tuple[Block, ...]
    source_regions: dict[str, str]
    destination_regions: dict[str, str]
    landed: Landed
    seen: Observations

    def checks(self, limits: Limits) -> list[CheckResult]:
        device = {name for name, kind in self.destination_regions.items() if kind in DEVICE_TYPES}
        expected = tuple(sorted(b for b in self.destination_blocks if b.name not in device))
        sent = tuple(sorted(self.stream_blocks)) if self.stream_blocks is not None else None
        own = [
            equal("guest uses XIVE", "XIVE", self.before.intc,
                  "/proc/interrupts on the source (ic-mode=xive)"),
            CheckResult("stream's RAM blocks are the destination's", bool(expected) and sent == expected,
                        _show(expected), _show(sent) if sent is not None else "no recorded stream",
                        "destination's info ramblock (less device regions) vs the stream's block list "
                        "(RAM section MEM_SIZE record), by name and used length"),
            CheckResult("no device region travels as RAM",
                        sent is not None and any(n.startswith(XIVE_PAGES) for n in device)
                        and not [b for b in sent if b.name in device],
                        f"none of the destination's {len(device)} device regions "
                        f"({', '.join(sorted(n for n in device if n.startswith(XIVE_PAGES)))} ...)",
                        [b.name for b in sent or () if b.name in device] or "none",
                        "stream block names vs the destination's info mtree regions of type i/o, "
                        "ramd, romd (its XIVE ESB and TIMA among them)"),
        ]
        if self.kvm:
            own.append(self._remapped())
        if self.after is not None:
            own.append(equal("guest keeps XIVE", "XIVE", self.after.intc,
                             "/proc/interrupts on the destination"))
        return own_first(own, self.seen, limits)

    def _remapped(self) -> CheckResult:
        def pages(regions: dict[str, str]) -> dict[str, str]:
            return {n: k for n, k in regions.items() if n.startswith(XIVE_PAGES)}
        src, dst = pages(self.source_regions), pages(self.destination_regions)
        mapped = all(any(n.startswith(p) and k == "ramd" for n, k in dst.items()) for p in XIVE_PAGES)
        return CheckResult("XIVE ESB and TIMA remapped on the destination", mapped and dst == src, src, dst,
                           "info mtree XIVE regions and their types on both sides (ramd: the host's "
                           "pages mapped into the guest), an ESB and a TIMA region of type ramd each")


def _show(blocks: tuple[Block, ...]) -> list[str]:
    return [f"{b.name} {b.size:#x}" for b in blocks]


def run(ctx: ScenarioContext, variant: Variant[bool]) -> XiveBlocksObservations:
    src, dst = start_pair(ctx)
    before = boot(ctx, src, devices=True)
    source_regions = region_types(hmp(src, "info mtree", ctx.rundir / "src-info-mtree.txt"))
    landed = land(ctx, src, dst, before)
    with ctx.phase("check"):
        destination_blocks = ram_blocks(hmp(dst, "info ramblock", ctx.rundir / "dst-info-ramblock.txt"))
        destination_regions = region_types(hmp(dst, "info mtree", ctx.rundir / "dst-info-mtree.txt"))
        after, silence = probe_after(dst, landed.stalled)
        stream_blocks = None
        if landed.result.stream is not None:
            ram = summarise(landed.result.stream).ram
            stream_blocks = tuple(Block(b.name, b.size) for b in ram.blocks) if ram else ()
    return XiveBlocksObservations(variant.data, before.probe, after, stream_blocks, destination_blocks,
                                  source_regions, destination_regions, landed,
                                  the_rest(ctx, src, dst, before, landed, silence))


XIVE = MachineChange(properties=(("ic-mode", "xive"),), smp=1, maxcpus=1)

SCENARIO = Scenario(
    name="xiveblocks",
    description="with XIVE: the stream's RAM blocks are the destination's, no device memory as RAM",
    run=run,
    variants=(
        Variant("xive", False, source=XIVE, description="ic-mode=xive; RAM blocks and interrupts"),
        Variant("kvm", True, source=XIVE, needs=Needs(accel="kvm", in_kernel_irqchip=True),
                description="also the ESB and TIMA pages remapped on the destination (KVM only)"),
    ),
    needs=Needs(machine_properties=("ic-mode",), min_machine=(4, 0)),
)
