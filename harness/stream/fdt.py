"""The device tree a pseries machine sent (``spapr_dtb`` subsection), decoded with pylibfdt.

QEMU keeps the tree it gave the guest at the last reset or CAS update
(spapr.c ``spapr_dtb``: fdt_initial_size, fdt_size, fdt_blob) and migrates it
on pseries-2.9 and newer so that the destination answers the guest's
``h_update_dt`` the same way. What matters for migration: the PCI host
bridges' windows (``ranges``, decoded per the PCI bus binding: phys.hi space
code and prefetchable bit, 64-bit CPU address, 64-bit size), the CPU nodes,
and which interrupt controller the tree presents.
"""

from __future__ import annotations

from dataclasses import dataclass

_SPACES = {0: "config", 1: "io", 2: "mem32", 3: "mem64"}


class FdtError(ValueError):
    """The blob is not a device tree libfdt can read."""


@dataclass(frozen=True, slots=True)
class PciWindow:
    """One entry of a PHB's ``ranges``: a PCI space mapped at a guest physical address."""

    space: str
    prefetchable: bool
    pci_address: int
    cpu_address: int
    size: int


@dataclass(frozen=True, slots=True)
class PhbNode:
    path: str
    buid: int | None
    index: int | None
    windows: tuple[PciWindow, ...]
    dma_window: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CpuNode:
    path: str
    reg: int | None
    interrupt_servers: tuple[int, ...]
    cpu_version: int | None


@dataclass(frozen=True, slots=True)
class FdtSummary:
    """What the tree says about the machine's layout."""

    size: int
    model: str
    compatible: tuple[str, ...]
    interrupt_controller: tuple[str, ...]  # compatible strings of /interrupt-controller
    cpus: tuple[CpuNode, ...]
    phbs: tuple[PhbNode, ...]
    memory: tuple[tuple[int, int], ...]  # (base, size) of /memory@* nodes


def summarise_fdt(blob: bytes) -> FdtSummary:
    """Decode ``blob`` (raises :class:`FdtError` if libfdt rejects it)."""
    import libfdt

    try:
        # libfdt's accessors trust the tree they walk: a corrupt one (this blob
        # comes from the stream) can make them read out of bounds and crash
        # the process. fdt_check_full is libfdt's own check for untrusted trees.
        libfdt.check_err(libfdt.fdt_check_full(bytearray(blob), len(blob)))
        _check_names(blob)
        fdt = libfdt.Fdt(bytes(blob))
        nodes = _walk(fdt, libfdt)
    except libfdt.FdtException as exc:
        raise FdtError(f"libfdt: {exc}") from exc
    root = nodes.get("/", {})
    cpus: list[CpuNode] = []
    phbs: list[PhbNode] = []
    memory: list[tuple[int, int]] = []
    intc: tuple[str, ...] = ()
    for path, props in nodes.items():
        name = path.rsplit("/", 1)[-1]
        device_type = _str(props.get("device_type"))
        if device_type == "cpu":
            cpus.append(
                CpuNode(
                    path,
                    _cell(props.get("reg")),
                    _cells(props.get("ibm,ppc-interrupt-server#s")),
                    _cell(props.get("cpu-version")),
                )
            )
        elif device_type == "pci" and name.startswith("pci@"):
            phbs.append(
                PhbNode(
                    path,
                    _u64(props.get("reg")),
                    _cell(props.get("ibm,index")),
                    _ranges(props.get("ranges")),
                    _cells(props.get("ibm,dma-window")),
                )
            )
        elif device_type == "memory":
            reg = _cells(props.get("reg"))
            for i in range(0, len(reg) - 3, 4):
                memory.append((reg[i] << 32 | reg[i + 1], reg[i + 2] << 32 | reg[i + 3]))
        if path.count("/") == 1 and name.split("@")[0] == "interrupt-controller":
            intc += _strings(props.get("compatible"))
    return FdtSummary(
        size=len(blob),
        model=_str(root.get("model")),
        compatible=_strings(root.get("compatible")),
        interrupt_controller=intc,
        cpus=tuple(cpus),
        phbs=tuple(phbs),
        memory=tuple(memory),
    )


def _check_names(blob: bytes) -> None:
    """Property names must be ASCII (as the spec's character set is).

    pylibfdt decodes them as UTF-8 and, when that fails, raises SystemError
    ("returned a result with an exception set") instead of an FdtException.
    Every name lies in the strings block (fdt_check_full checked the offsets),
    so an ASCII block means decodable names.
    """
    start = int.from_bytes(blob[12:16], "big")  # off_dt_strings
    size = int.from_bytes(blob[32:36], "big")  # size_dt_strings
    if not blob[start : start + size].isascii():
        raise FdtError("property names that are not ASCII")


def _walk(fdt: object, libfdt: object) -> dict[str, dict[str, bytes]]:
    """Every node's path and properties."""
    quiet = (libfdt.FDT_ERR_NOTFOUND,)  # type: ignore[attr-defined]
    nodes: dict[str, dict[str, bytes]] = {}
    offset, depth = 0, 0
    while offset >= 0 and depth >= 0:
        path = fdt.get_path(offset)  # type: ignore[attr-defined]
        props: dict[str, bytes] = {}
        poff = fdt.first_property_offset(offset, quiet)  # type: ignore[attr-defined]
        while poff >= 0:
            prop = fdt.get_property_by_offset(poff)  # type: ignore[attr-defined]
            props[prop.name] = bytes(prop)
            poff = fdt.next_property_offset(poff, quiet)  # type: ignore[attr-defined]
        nodes[path] = props
        offset, depth = fdt.next_node(offset, depth, quiet)  # type: ignore[attr-defined]
    return nodes


def _ranges(raw: bytes | None) -> tuple[PciWindow, ...]:
    """PCI ``ranges``: 3 child cells, 2 parent cells (spapr root), 2 size cells."""
    cells = _cells(raw)
    out = []
    for i in range(0, len(cells) - 6, 7):
        hi, mid, lo, cpu_hi, cpu_lo, size_hi, size_lo = cells[i : i + 7]
        out.append(
            PciWindow(
                space=_SPACES[(hi >> 24) & 3],
                prefetchable=bool(hi & (1 << 30)),
                pci_address=mid << 32 | lo,
                cpu_address=cpu_hi << 32 | cpu_lo,
                size=size_hi << 32 | size_lo,
            )
        )
    return tuple(out)


def _cells(raw: bytes | None) -> tuple[int, ...]:
    if not raw:
        return ()
    return tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw) - 3, 4))


def _cell(raw: bytes | None) -> int | None:
    cells = _cells(raw)
    return cells[0] if cells else None


def _u64(raw: bytes | None) -> int | None:
    cells = _cells(raw)
    return cells[0] << 32 | cells[1] if len(cells) >= 2 else None


def _strings(raw: bytes | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(s.decode("ascii", "replace") for s in raw.rstrip(b"\0").split(b"\0"))


def _str(raw: bytes | None) -> str:
    strings = _strings(raw)
    return strings[0] if strings else ""
