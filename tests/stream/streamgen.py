"""Write small synthetic migration streams, byte by byte as QEMU's savevm.c and ram.c do.

For unit tests of corner cases real QEMU does not produce on demand (every
RAM page kind, commands, corrupt data). Real streams are tested elsewhere.
"""

from __future__ import annotations

import json
import struct
from typing import Any


class StreamWriter:
    """Appends records; ``bytes()`` returns the stream so far."""

    def __init__(self, header: bool = True) -> None:
        self.buf = bytearray()
        if header:
            self.u32(0x5145564D).u32(3)

    def __bytes__(self) -> bytes:
        return bytes(self.buf)

    def u8(self, v: int) -> StreamWriter:
        self.buf += struct.pack(">B", v)
        return self

    def u16(self, v: int) -> StreamWriter:
        self.buf += struct.pack(">H", v)
        return self

    def u32(self, v: int) -> StreamWriter:
        self.buf += struct.pack(">I", v)
        return self

    def u64(self, v: int) -> StreamWriter:
        self.buf += struct.pack(">Q", v)
        return self

    def raw(self, data: bytes) -> StreamWriter:
        self.buf += data
        return self

    def name(self, text: str) -> StreamWriter:
        return self.u8(len(text)).raw(text.encode())

    # -- records -------------------------------------------------------------

    def configuration(self, machine: str, caps: tuple[str, ...] = ()) -> StreamWriter:
        self.u8(0x07).u32(len(machine)).raw(machine.encode())
        if caps:
            self.subsection("configuration/capabilities", 1).u32(len(caps))
            for cap in caps:
                self.name(cap)
        return self

    def start(self, sid: int, idstr: str, instance: int = 0, version: int = 1) -> StreamWriter:
        return self.u8(0x01).u32(sid).name(idstr).u32(instance).u32(version)

    def full(self, sid: int, idstr: str, instance: int = 0, version: int = 1) -> StreamWriter:
        return self.u8(0x04).u32(sid).name(idstr).u32(instance).u32(version)

    def part(self, sid: int) -> StreamWriter:
        return self.u8(0x02).u32(sid)

    def end(self, sid: int) -> StreamWriter:
        return self.u8(0x03).u32(sid)

    def footer(self, sid: int) -> StreamWriter:
        return self.u8(0x7E).u32(sid)

    def subsection(self, name: str, version: int) -> StreamWriter:
        return self.u8(0x05).name(name).u32(version)

    def command(self, cmd: int, payload: bytes = b"") -> StreamWriter:
        return self.u8(0x08).u16(cmd).u16(len(payload)).raw(payload)

    def eof(self) -> StreamWriter:
        return self.u8(0x00)

    def vmdesc(self, desc: dict[str, Any]) -> StreamWriter:
        text = json.dumps(desc, separators=(",", ":")).encode()
        return self.u8(0x06).u32(len(text)).raw(text)

    # -- RAM (ram.c) -----------------------------------------------------------

    def ram_blocks(self, blocks: dict[str, int]) -> StreamWriter:
        self.u64(sum(blocks.values()) | 0x04)
        for block, size in blocks.items():
            self.name(block).u64(size)
        return self

    def ram_page(self, block: str | None, addr: int, kind: str, fill: int = 0) -> StreamWriter:
        flags = {"zero": 0x02, "page": 0x08, "xbzrle": 0x40, "compressed": 0x100}[kind]
        self.u64(addr | flags | (0x20 if block is None else 0))
        if block is not None:
            self.name(block)
        if kind == "zero":
            self.u8(fill)
        elif kind == "page":
            self.raw(bytes([0xAB]) * 4096)
        elif kind == "xbzrle":
            self.u8(1).u16(3).raw(b"xyz")
        else:
            self.u32(5).raw(b"zlib!")
        return self

    def ram_flag(self, flags: int) -> StreamWriter:
        return self.u64(flags)

    def ram_eos(self) -> StreamWriter:
        return self.u64(0x10)


def field(name: str, type_: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "size": size, **extra}


def device(name: str, fields: list[dict[str, Any]], instance: int = 0, version: int = 1,
           subsections: list[dict[str, Any]] | None = None, vmsd: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "instance_id": instance, "vmsd_name": vmsd or name,
                           "version": version, "fields": fields}
    if subsections:
        out["subsections"] = subsections
    return out


# A stream with one of everything (tests of the parser and of damaged input start here).

BLOCK = "ppc_spapr.ram"

DEV_FIELDS = [
    field("a", "uint32", 4),
    field("neg", "int16", 2),
    field("flag", "bool", 1),
    field("inner", "struct", 9, struct={"vmsd_name": "inner", "version": 1, "fields": [
        field("x", "uint8", 1), field("y", "uint64", 8)]}),
    field("arr", "uint16", 2, array_len=3),
    field("irqs", "struct", 5, array_len=2, struct={"vmsd_name": "irq", "version": 1, "fields": [
        field("server", "uint32", 4), field("prio", "uint8", 1)]}),
    field("buf", "buffer", 4),
    field("np", "nullptr", 1),
    field("chk", "uint32 equal", 4),
]
DEV_SUBSECTIONS = [{"vmsd_name": "dev/sub", "version": 2, "fields": [field("z", "uint8", 1)]}]


def dev_state(w: StreamWriter) -> StreamWriter:
    """The bytes of DEV_FIELDS and its subsection."""
    w.u32(7).raw(struct.pack(">h", -2)).u8(1).u8(9).u64(2**63 + 5)
    w.u16(1).u16(2).u16(3)
    w.u32(10).u8(0xFF).u32(11).u8(0x05)
    w.raw(b"\xde\xad\xbe\xef").raw(b"0").u32(0x1234)
    return w.subsection("dev/sub", 2).u8(0x42)


def vmdesc() -> dict[str, Any]:
    return {"page_size": 4096, "devices": [
        device("dev", DEV_FIELDS, instance=0x80000001, version=2, subsections=DEV_SUBSECTIONS),
    ]}


def full_stream(*, footers: bool = True, with_vmdesc: bool = True) -> bytes:
    """A stream with configuration, RAM (every page kind), HPT, a command and a device."""
    w = StreamWriter()

    def foot(sid: int) -> None:
        if footers:
            w.footer(sid)

    if footers:
        w.configuration("pseries-9.9")
    w.start(2, "ram", 0, 4).ram_blocks({BLOCK: 0x100000}).ram_eos()
    foot(2)
    w.start(3, "spapr/htab", 0, 1).u32(18)
    foot(3)
    w.part(2).ram_page(BLOCK, 0, "zero").ram_page(None, 0x1000, "page")
    w.ram_page(None, 0x2000, "xbzrle").ram_page(None, 0x3000, "compressed")
    w.ram_page(None, 0x4000, "zero", fill=7).ram_flag(0x200).ram_eos()
    foot(2)
    w.part(3).u32(0).u32(5).u16(2).u16(1).raw(bytes(32)).u32(0).u16(0).u16(0)
    foot(3)
    w.command(2, struct.pack(">I", 77))
    w.end(2).ram_page(None, 0x5000, "page").ram_eos()
    foot(2)
    w.end(3).u32(0xFFFFFFFF)
    foot(3)
    dev_state(w.full(4, "dev", 0x80000001, 2))
    foot(4)
    w.eof()
    if with_vmdesc:
        w.vmdesc(vmdesc())
    return bytes(w)
