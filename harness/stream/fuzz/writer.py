"""Write migration streams byte by byte as QEMU's savevm.c and ram.c do, noting their structure.

Besides the bytes, the writer keeps what a structure-aware mutator needs
(:class:`Marks`): where records, RAM records, fields and subsections start,
where the length fields are, the span of each whole section (header, body,
footer) and of payloads worth corrupting on their own (the vmdesc JSON, a
device tree). The stream tests write their corner cases with it too.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

# Kinds of boundary a mutator can cut or insert at.
RECORD = "record"  # a top-level record starts (section header, footer, command, EOF, trailer)
BODY = "body"  # a section body starts
RAM = "ram"  # a RAM record (be64 header word) starts
FIELD = "field"  # a device field or HPT chunk starts
SUBSECTION = "subsection"  # a 0x05 subsection marker


@dataclass
class Marks:
    """The structure of a stream as written (offsets into it)."""

    boundaries: dict[str, list[int]] = field(default_factory=dict)
    lengths: list[tuple[int, int]] = field(default_factory=list)  # (offset, width) of length fields
    sections: list[tuple[int, int]] = field(default_factory=list)  # whole sections, footer included
    regions: list[tuple[int, int]] = field(default_factory=list)  # payloads: vmdesc JSON, FDT blobs

    def add(self, kind: str, offset: int) -> None:
        self.boundaries.setdefault(kind, []).append(offset)


@dataclass(frozen=True)
class Seed:
    """A stream and its structure, the starting point of mutations."""

    origin: str
    data: bytes
    boundaries: dict[str, tuple[int, ...]]
    lengths: tuple[tuple[int, int], ...]
    sections: tuple[tuple[int, int], ...]
    regions: tuple[tuple[int, int], ...]
    vmdesc: tuple[int, int] | None  # where the trailer's JSON is, when the stream ends with one


class StreamWriter:
    """Appends records; ``bytes()`` returns the stream so far, :meth:`seed` it and its marks."""

    def __init__(self, header: bool = True) -> None:
        self.buf = bytearray()
        self.marks = Marks()
        self.vmdesc_span: tuple[int, int] | None = None
        if header:
            self.u32(0x5145564D).u32(3)

    def __bytes__(self) -> bytes:
        return bytes(self.buf)

    @property
    def pos(self) -> int:
        return len(self.buf)

    def seed(self, origin: str) -> Seed:
        m = self.marks
        return Seed(
            origin, bytes(self.buf), {k: tuple(v) for k, v in m.boundaries.items()},
            tuple(m.lengths), tuple(m.sections), tuple(m.regions), self.vmdesc_span,
        )

    def mark(self, kind: str) -> StreamWriter:
        self.marks.add(kind, self.pos)
        return self

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

    def length(self, width: int, v: int) -> StreamWriter:
        """A length field (noted for the mutator)."""
        self.marks.lengths.append((self.pos, width))
        self.buf += v.to_bytes(width, "big")
        return self

    def name(self, text: str) -> StreamWriter:
        return self.length(1, len(text)).raw(text.encode())

    # -- records -------------------------------------------------------------

    def configuration(self, machine: str, caps: tuple[str, ...] = ()) -> StreamWriter:
        self.mark(RECORD).u8(0x07).length(4, len(machine)).raw(machine.encode())
        if caps:
            self.subsection("configuration/capabilities", 1).length(4, len(caps))
            for cap in caps:
                self.name(cap)
        return self

    def start(self, sid: int, idstr: str, instance: int = 0, version: int = 1) -> StreamWriter:
        return self.mark(RECORD).u8(0x01).u32(sid).name(idstr).u32(instance).u32(version).mark(BODY)

    def full(self, sid: int, idstr: str, instance: int = 0, version: int = 1) -> StreamWriter:
        return self.mark(RECORD).u8(0x04).u32(sid).name(idstr).u32(instance).u32(version).mark(BODY)

    def part(self, sid: int) -> StreamWriter:
        return self.mark(RECORD).u8(0x02).u32(sid).mark(BODY)

    def end(self, sid: int) -> StreamWriter:
        return self.mark(RECORD).u8(0x03).u32(sid).mark(BODY)

    def footer(self, sid: int) -> StreamWriter:
        return self.mark(RECORD).u8(0x7E).u32(sid)

    def subsection(self, name: str, version: int) -> StreamWriter:
        return self.mark(SUBSECTION).u8(0x05).name(name).u32(version)

    def command(self, cmd: int, payload: bytes = b"") -> StreamWriter:
        return self.mark(RECORD).u8(0x08).u16(cmd).length(2, len(payload)).raw(payload)

    def eof(self) -> StreamWriter:
        return self.mark(RECORD).u8(0x00)

    def vmdesc(self, desc: dict[str, Any]) -> StreamWriter:
        text = json.dumps(desc, separators=(",", ":")).encode()
        self.mark(RECORD).u8(0x06).length(4, len(text))
        self.vmdesc_span = (self.pos, self.pos + len(text))
        self.marks.regions.append(self.vmdesc_span)
        return self.raw(text)

    # -- RAM (ram.c) -----------------------------------------------------------

    def ram_blocks(self, blocks: dict[str, int], addresses: bool = False) -> StreamWriter:
        """MEM_SIZE and the block list (with x-ignore-shared, each block's guest address)."""
        self.mark(RAM).u64(sum(blocks.values()) | 0x04)
        for n, (block, size) in enumerate(blocks.items()):
            self.name(block).u64(size)
            if addresses:
                self.u64(n << 32)
        return self

    def ram_page(self, block: str | None, addr: int, kind: str, fill: int = 0,
                 page_size: int = 4096) -> StreamWriter:
        flags = {"zero": 0x02, "page": 0x08, "xbzrle": 0x40, "compressed": 0x100}[kind]
        self.mark(RAM).u64(addr | flags | (0x20 if block is None else 0))
        if block is not None:
            self.name(block)
        if kind == "zero":
            self.u8(fill)
        elif kind == "page":
            self.raw(bytes([0xAB]) * page_size)
        elif kind == "xbzrle":
            self.u8(1).length(2, 3).raw(b"xyz")
        else:
            self.length(4, 5).raw(b"zlib!")
        return self

    def ram_continued(self, addrs: list[int], kind: str, page_size: int = 4096) -> StreamWriter:
        """Same-block (CONTINUE) zero or normal pages at ``addrs``, written in one go."""
        flags, tail = (0x22, b"\0") if kind == "zero" else (0x28, bytes([0xAB]) * page_size)
        step = 8 + len(tail)
        self.marks.boundaries.setdefault(RAM, []).extend(range(self.pos, self.pos + step * len(addrs), step))
        self.buf += b"".join(struct.pack(">Q", addr | flags) + tail for addr in addrs)
        return self

    def ram_flag(self, flags: int) -> StreamWriter:
        return self.mark(RAM).u64(flags)

    def ram_eos(self) -> StreamWriter:
        return self.mark(RAM).u64(0x10)
