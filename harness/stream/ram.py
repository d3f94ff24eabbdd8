"""Decoder for the ``ram`` section (version 4): block list and page counts, no contents.

Format (migration/ram.c): a sequence of be64 words whose low bits (below the
target page size) are flags and high bits a page offset. ``MEM_SIZE``
(ram_save_setup) carries the total RAM size and is followed by the block list
(u8 name length, name, be64 used length; plus be64 guest address per block
with the x-ignore-shared capability). A page record (save_page_header) names
its block unless ``CONTINUE`` says "same block as the previous page" - the
previous page of the whole stream, across sections. Then: ``ZERO`` one fill
byte; ``PAGE`` a whole page; ``XBZRLE`` u8 encoding (1), be16 length, data
(save_xbzrle_page); ``COMPRESS_PAGE`` be32 length, zlib data (QEMU < 9.1).
``MULTIFD_FLUSH`` and ``EOS`` (end of this section's RAM data) stand alone.
The decoder checks what ram_load_precopy checks: known flag combinations,
known blocks, offsets inside the block.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, fields

from harness.stream.format import (
    RAM_COMPRESS_PAGE,
    RAM_CONTINUE,
    RAM_EOS,
    RAM_HOOK,
    RAM_MEM_SIZE,
    RAM_MULTIFD_FLUSH,
    RAM_PAGE,
    RAM_XBZRLE,
    RAM_ZERO,
)
from harness.stream.reader import StreamReader

_BE64 = struct.Struct(">Q")

# Fast path for 4 KiB pages: runs of same-block (CONTINUE) zero or normal page
# records are matched in C and only their offsets checked, not looped over in
# Python. Byte 6 of the header holds flag bits 8-11, which must be clear.
_LOW_NIBBLE_CLEAR = b"[" + b"".join(b"\\x%02x" % (n << 4) for n in range(16)) + b"]"
_ZERO_RUN = re.compile(rb"(?:.{6}" + _LOW_NIBBLE_CLEAR + rb"\x22\x00)++", re.DOTALL)
_PAGE_RUN = re.compile(rb"(?:.{6}" + _LOW_NIBBLE_CLEAR + rb"\x28.{4096})++", re.DOTALL)
_ZERO_HEADERS = struct.Struct(">Qx")
_PAGE_HEADERS = struct.Struct(">Q4096x")
_ENCODING_FLAG_XBZRLE = 0x1  # ram.c
_MAX_COMPRESSED = 4096 + 1024  # above zlib's compressBound(TARGET_PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class RamBlock:
    """A RAM block as announced by the source (name, used length in bytes)."""

    name: str
    size: int
    guest_address: int | None = None  # only with x-ignore-shared


@dataclass(frozen=True, slots=True)
class PageCounts:
    """How many page records of each kind were seen (not distinct pages: resends count)."""

    zero: int = 0
    normal: int = 0
    xbzrle: int = 0
    compressed: int = 0
    filled: int = 0  # ZERO records with a non-zero fill byte (pre-9.0 "compress" pages)
    multifd_flush: int = 0
    eos: int = 0

    def __add__(self, other: PageCounts) -> PageCounts:
        return PageCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def pages(self) -> int:
        """Page records of any kind."""
        return self.zero + self.normal + self.xbzrle + self.compressed


@dataclass(frozen=True, slots=True)
class BlockPages:
    """Page counts of one block within one section."""

    block: str
    counts: PageCounts


@dataclass(frozen=True, slots=True)
class RamPiece:
    """What one START/PART/END ``ram`` section carried."""

    blocks: tuple[RamBlock, ...]
    counts: PageCounts
    per_block: tuple[BlockPages, ...]
    ended: bool


class RamDecoder:
    """Stateful across the ``ram`` sections of one stream (block list, CONTINUE target)."""

    def __init__(self, page_size: int, ignore_shared: bool = False) -> None:
        self.page_size = page_size
        self.ignore_shared = ignore_shared
        self.blocks: dict[bytes, RamBlock] = {}
        self._last: bytes | None = None

    def read(self, r: StreamReader) -> RamPiece:
        """Read one section's RAM data, up to and including its EOS."""
        mask = self.page_size - 1
        page_size = self.page_size
        per: dict[bytes, list[int]] = {}
        announced: list[RamBlock] = []
        flushes = 0
        unpack = _BE64.unpack_from
        last = self._last
        counts = per.setdefault(last, [0, 0, 0, 0, 0]) if last is not None else None
        last_size = self.blocks[last].size if last is not None else 0
        # The hot loop keeps the reader's window in locals; r.pos is written
        # back before any call that reads through the reader.
        buf, pos, limit = r.buf, r.pos, r.limit
        fast = page_size == 4096
        while True:
            if fast and counts is not None:
                run = _run(buf, pos, limit, last_size)
                if run is not None:
                    pos, zeros, pages = run
                    counts[0] += zeros
                    counts[1] += pages
                    continue
            if pos + 8 > limit:
                r.pos = pos
                r.need(8)
                buf, pos, limit = r.buf, r.pos, r.limit
            (word,) = unpack(buf, pos)
            pos += 8
            flags = word & mask
            kind = flags & ~RAM_CONTINUE
            if kind in (RAM_ZERO, RAM_PAGE):
                if not flags & RAM_CONTINUE or counts is None:
                    r.pos = pos
                    last, counts, last_size = self._switch_block(r, flags, pos - 8, per)
                    buf, pos, limit = r.buf, r.pos, r.limit
                if word - flags >= last_size:
                    raise self._outside(r, word - flags, last, last_size, pos - 8)
                if kind == RAM_ZERO:
                    if pos >= limit:
                        r.pos = pos
                        r.need(1)
                        buf, pos, limit = r.buf, r.pos, r.limit
                    if buf[pos]:
                        counts[4] += 1
                    pos += 1
                    counts[0] += 1
                else:
                    pos += page_size
                    if pos > limit:
                        r.pos = pos - page_size
                        r.skip(page_size)
                        buf, pos, limit = r.buf, r.pos, r.limit
                    counts[1] += 1
                continue
            r.pos = pos
            here = pos - 8 + r.base
            if kind in (RAM_XBZRLE, RAM_COMPRESS_PAGE):
                if not flags & RAM_CONTINUE or counts is None:
                    last, counts, last_size = self._switch_block(r, flags, pos - 8, per)
                if word - flags >= last_size:
                    raise self._outside(r, word - flags, last, last_size, pos - 8)
                if kind == RAM_XBZRLE:
                    encoding = r.u8()
                    length = r.u16()
                    if encoding != _ENCODING_FLAG_XBZRLE or length > page_size:
                        raise r.error(f"XBZRLE page: encoding {encoding}, length {length}", here)
                    counts[2] += 1
                else:
                    length = r.u32()
                    if length > _MAX_COMPRESSED:
                        raise r.error(f"compressed page of {length} bytes", here)
                    counts[3] += 1
                r.skip(length)
            elif kind == RAM_EOS:
                break
            elif kind == RAM_MULTIFD_FLUSH:
                flushes += 1
            elif kind == RAM_MEM_SIZE:
                announced.extend(self._read_block_list(r, word - flags, here))
            elif kind == RAM_HOOK:
                raise r.error("RAM_SAVE_FLAG_HOOK: RDMA control data cannot be decoded", here)
            else:
                raise r.error(f"unknown combination of RAM flags 0x{flags:x}", here)
            buf, pos, limit = r.buf, r.pos, r.limit
        self._last = last
        per_block = tuple(
            BlockPages(name.decode("ascii", "replace"), PageCounts(c[0], c[1], c[2], c[3], c[4]))
            for name, c in per.items()
            if any(c)
        )
        total = PageCounts(multifd_flush=flushes, eos=1)
        for item in per_block:
            total = total + item.counts
        return RamPiece(tuple(announced), total, per_block, True)

    def _switch_block(
        self, r: StreamReader, flags: int, header_pos: int, per: dict[bytes, list[int]]
    ) -> tuple[bytes, list[int], int]:
        """Read the block name after a page header without CONTINUE."""
        here = r.base + header_pos
        if flags & RAM_CONTINUE:
            raise r.error("page with CONTINUE flag before any block was named", here)
        name = r.take(r.u8())
        block = self.blocks.get(name)
        if block is None:
            raise r.error(f"page of unknown RAM block {name!r}", here)
        return name, per.setdefault(name, [0, 0, 0, 0, 0]), block.size

    @staticmethod
    def _outside(
        r: StreamReader, addr: int, name: bytes | None, size: int, header_pos: int
    ) -> Exception:
        return r.error(
            f"page offset 0x{addr:x} outside RAM block {name!r} of 0x{size:x} bytes",
            r.base + header_pos,
        )

    def _read_block_list(self, r: StreamReader, total: int, here: int) -> list[RamBlock]:
        """The blocks after MEM_SIZE, until their lengths add up to ``total`` (parse_ramblocks)."""
        out = []
        left = total
        while left > 0:
            name = r.take(r.u8())
            size = r.u64()
            address = r.u64() if self.ignore_shared else None
            if size > left:
                raise r.error(
                    f"RAM block {name!r} of 0x{size:x} bytes exceeds the announced total "
                    f"0x{total:x}", here
                )
            left -= size
            block = RamBlock(name.decode("ascii", "replace"), size, address)
            self.blocks[name] = block
            out.append(block)
        return out


def _run(buf: mmap.mmap | bytes, pos: int, limit: int, block_size: int) -> tuple[int, int, int] | None:
    """A run of CONTINUE zero or normal pages at ``pos``: (end, zero pages, normal pages).

    The run stops before a page whose offset lies outside the block; None when
    there is no run or that page comes first (the record-by-record loop then
    reports it).
    """
    for pattern, headers, is_zero in ((_ZERO_RUN, _ZERO_HEADERS, True), (_PAGE_RUN, _PAGE_HEADERS, False)):
        match = pattern.match(buf, pos, limit)
        if match is None:
            continue
        end = match.end()
        n = (end - pos) // headers.size
        with memoryview(buf) as view:
            top = max(headers.iter_unpack(view[pos:end]))[0] & ~0xFFF
            if top >= block_size:  # stop before the first page outside the block
                n = next(i for i, (word,) in enumerate(headers.iter_unpack(view[pos:end]))
                         if word & ~0xFFF >= block_size)
        if n == 0:
            return None
        end = pos + n * headers.size
        return (end, n, 0) if is_zero else (end, 0, n)
    return None
