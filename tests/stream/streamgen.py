"""Small synthetic migration streams for unit tests of corner cases real QEMU does not produce
on demand (every RAM page kind, commands, corrupt data); real streams are tested elsewhere.

The writer is the fuzzer's (:mod:`harness.stream.fuzz.writer`), which writes
byte by byte as QEMU's savevm.c and ram.c do.
"""

from __future__ import annotations

import struct
from typing import Any

from harness.stream.fuzz.writer import StreamWriter


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
