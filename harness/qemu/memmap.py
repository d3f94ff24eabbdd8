"""QEMU's own view of a machine's memory: PHB windows (``info mtree``) and RAM blocks
(``info ramblock``), read over QMP's human-monitor-command.

Both HMP commands exist, with these formats, in QEMU 5.2, 7.2 and 10.0 (QMP's
``x-query-ramblock`` only from 6.2, and it returns the same text). The text
each command printed is kept in the run directory as evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.runner.side import Side

# "0000200100000000-000020013fffffff (prio 0, i/o): alias pci@800000020000001.mmio32-alias
#  @pci@800000020000001.mmio 0000000080000000-00000000bfffffff" (hw/ppc/spapr_pci.c realize)
_WINDOW = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, [a-z/-]+\): alias "
                     r"(pci@[0-9a-f]+)\.(io|mmio32|mmio64)-alias @\S+ ([0-9a-f]+)-[0-9a-f]+")
# "  ppc_spapr.ram    4 KiB  0x0000000000000000 0x0000000020000000 0x0000000020000000 ..."
_BLOCK = re.compile(r"^\s*(\S+)\s+\d+ [KMGT]?i?B\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")
# "0006010000000000-000601003fffffff (prio 0, i/o): xive.esb" (any region with its type)
_REGION = re.compile(r"^\s*[0-9a-f]+-[0-9a-f]+ \(prio -?\d+, ([a-z/-]+)\): (?:alias )?([^\s@]+)")


@dataclass(frozen=True, order=True)
class Window:
    """One window of a PHB: CPU (guest physical) address ``cpu`` maps to PCI address ``pci``."""

    phb: str
    """The PHB's device-tree node name, ``pci@<buid>``."""
    space: str
    """``io``, ``mmio32`` or ``mmio64``."""
    cpu: int
    pci: int
    size: int


@dataclass(frozen=True, order=True)
class Block:
    """A RAM block: its name (idstr) and used length, as the stream's block list gives them."""

    name: str
    size: int


def phb_windows(mtree: str) -> tuple[Window, ...]:
    """Every PHB window alias mapped in ``info mtree`` output (each once, sorted)."""
    found = set()
    for line in mtree.splitlines():
        m = _WINDOW.match(line)
        if m:
            start, end = int(m[1], 16), int(m[2], 16)
            found.add(Window(m[3], m[4], start, int(m[5], 16), end - start + 1))
    return tuple(sorted(found))


def ram_blocks(text: str) -> tuple[Block, ...]:
    """The named RAM blocks of ``info ramblock`` output, with their used length.

    A block gets its name (idstr) when it is registered for migration
    (``vmstate_register_ram``); one that never is (a RAM device region such as
    XIVE's KVM pages, ``*_nomigrate`` RAM) prints an empty name and is left out.
    """
    return tuple(Block(m[1], int(m[3], 16)) for line in text.splitlines() if (m := _BLOCK.match(line)))


def region_types(mtree: str) -> dict[str, str]:
    """Each named memory region of ``info mtree`` and its type (ram, i/o, ramd, romd, rom)."""
    return {m[2]: m[1] for line in mtree.splitlines() if (m := _REGION.match(line))}


def hmp(side: Side, command: str, evidence: Path) -> str:
    """Run HMP ``command`` on ``side``; its output is also written to ``evidence``."""
    args: dict[str, Any] = {"command-line": command}
    out = side.monitor.cmd("human-monitor-command", **args)
    if not isinstance(out, str):
        raise HarnessError(f"{side.role}: HMP {command!r} returned {out!r}, not text")
    evidence.write_text(out)
    return out
