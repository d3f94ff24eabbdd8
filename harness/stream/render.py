"""Text tables and JSON-ready dicts for summaries (the one place that formats them)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import TYPE_CHECKING, Any

from harness.stream.spapr import CasOptions

if TYPE_CHECKING:
    from harness.stream.summary import StreamSummary


def to_jsonable(obj: object) -> Any:
    """Dataclasses to dicts, bytes to hex, tuples to lists, enums to values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
               if not f.name.startswith("_")}
        if isinstance(obj, CasOptions):
            out["interrupt_controller"] = obj.interrupt_controller
            out["mmu"] = obj.mmu
        return out
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    return obj


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << (shift - 4)) == 0:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} B"


def summary_text(s: StreamSummary) -> str:
    out = [
        f"stream {s.source}: {s.size} bytes, format version {s.format_version}, "
        f"machine {s.machine or '(no configuration record)'}, page size {s.page_size}",
        f"vmdesc: {'yes' if s.has_vmdesc else 'no'}; section footers: {'yes' if s.footers else 'no'}"
        + (f"; capabilities: {', '.join(s.capabilities)}" if s.capabilities else ""),
        "",
        "sections:",
    ]
    rows = []
    for sec in s.sections:
        subs = ", ".join(f"{e.path + '/' if e.path else ''}{e.name} v{e.version}" for e in sec.subsections)
        rows.append([
            str(sec.section_id), sec.idstr, f"0x{sec.instance_id:x}", str(sec.version_id),
            sec.kind + (f" x{sec.pieces}" if sec.pieces > 1 else ""), str(sec.size),
            subs if sec.decoded else f"(not decoded: {sec.note})",
        ])
    out += ["  " + line for line in table(
        ["id", "idstr", "instance", "ver", "kind", "bytes", "subsections"], rows)]
    if s.ram:
        out += ["", "RAM:"]
        out += [f"  block {b.name}: {size_text(b.size)}" for b in s.ram.blocks]
        c = s.ram.counts
        out.append(
            f"  page records: zero {c.zero}, normal {c.normal}, xbzrle {c.xbzrle}, "
            f"compressed {c.compressed}, multifd flush {c.multifd_flush}; "
            f"EOS {c.eos} in {s.ram.sections} sections"
        )
    if s.htab:
        h = s.htab
        hpt = "none (radix guest)" if h.no_hpt and h.shift is None else (
            f"2^{h.shift} bytes" if h.shift else "size not sent")
        out += ["", f"HPT: {hpt}; chunks {h.chunks}, valid HPTEs {h.valid}, "
                    f"invalidated {h.invalid}, {h.sections} sections"]
    if s.spapr:
        out += ["", "spapr:"] + _spapr_lines(s)
    if s.commands:
        out += ["", "commands: " + ", ".join(f"{name} x{n}" for name, n in s.commands)]
    if s.notes:
        out += ["", "notes:"] + [f"  {n}" for n in s.notes]
    return "\n".join(out) + "\n"


def _spapr_lines(s: StreamSummary) -> list[str]:
    assert s.spapr is not None
    sp = s.spapr
    out = []
    if sp.timebase:
        try:
            stamp = datetime.datetime.fromtimestamp(
                sp.timebase.time_of_the_day_ns / 1e9, datetime.UTC
            ).isoformat(timespec="milliseconds")
        except (OverflowError, ValueError, OSError):
            stamp = "not a valid time"
        out.append(
            f"  timebase: guest_timebase {sp.timebase.guest_timebase} "
            f"(0x{sp.timebase.guest_timebase:x}), time_of_the_day_ns "
            f"{sp.timebase.time_of_the_day_ns} ({stamp})"
        )
    caps = ", ".join(f"{c.name}={c.meaning}" for c in sp.caps) or "none (all at defaults)"
    out.append(f"  capabilities sent: {caps}")
    if sp.cas is None:
        out.append("  CAS option vector 5: not sent")
    else:
        out.append(
            f"  CAS option vector 5: interrupt controller {sp.cas.interrupt_controller}, "
            f"MMU {sp.cas.mmu}; options {', '.join(sp.cas.options) or '-'}"
        )
    if sp.fdt is None:
        out.append(f"  device tree: {sp.fdt_note or 'not sent'}")
        return out
    f = sp.fdt
    out.append(
        f"  device tree: {f.size} bytes, {f.model!r}, interrupt controller "
        f"{', '.join(f.interrupt_controller) or '-'}"
    )
    for mem in f.memory:
        out.append(f"    memory 0x{mem[0]:x} +{size_text(mem[1])}")
    for cpu in f.cpus:
        version = f"0x{cpu.cpu_version:08x}" if cpu.cpu_version is not None else "-"
        out.append(
            f"    cpu {cpu.path}: reg {cpu.reg}, servers {list(cpu.interrupt_servers)}, "
            f"cpu-version {version}"
        )
    for phb in f.phbs:
        buid = f"0x{phb.buid:x}" if phb.buid is not None else "-"
        out.append(f"    PHB {phb.path}: buid {buid}")
        for w in phb.windows:
            pf = " prefetchable" if w.prefetchable else ""
            out.append(
                f"      {w.space}{pf}: pci 0x{w.pci_address:x} -> cpu 0x{w.cpu_address:x}, "
                f"{size_text(w.size)}"
            )
    return out
