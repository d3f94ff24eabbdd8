"""Find where a section that cannot be decoded ends, so the rest of the stream can be read.

A section body has no length on the wire: only its description (the vmdesc)
or its decoder knows where it stops. Without one, the next record is searched
for: with section footers (QEMU 2.4+ machines, savevm.c save_section_footer)
the footer ``0x7e`` + be32 section id, confirmed by a plausible record after
it; without them (pseries-2.3 and older) the next plausible record header.
A plausible header is checked field by field (known section ids for PART/END,
a printable idstr and a small version for START/FULL, a known command), so
data that merely contains the marker byte is passed over.
"""

from __future__ import annotations

import re
import struct

from harness.stream.format import COMMAND_LENGTHS, Command, RecordType
from harness.stream.reader import StreamReader

_BE32 = struct.Struct(">I")
_HEADER_OVERLAP = 4 + 1 + 255 + 8 + 16


class Resync:
    """What the parser knows that makes a record boundary recognisable."""

    def __init__(self, r: StreamReader, eof_offset: int) -> None:
        self._r = r
        self.eof_offset = eof_offset  # where the EOF byte must be (before the vmdesc, or last byte)
        self.seen_ids: set[int] = set()
        self.iterative_ids: set[int] = set()

    def find_end(self, section_id: int, footers: bool) -> int:
        """Offset of the footer of ``section_id`` (footers) or of the next record."""
        r = self._r
        start = r.tell()
        if footers:
            pattern = re.compile(re.escape(bytes([RecordType.SECTION_FOOTER]) + _BE32.pack(section_id)))
            for at in r.finditer(pattern, start, 5):
                if at > self.eof_offset:
                    break
                if self.plausible(at + 5, depth=1) or at + 5 == self.eof_offset:
                    return at
            raise r.error(f"no footer for section {section_id} after the undecodable data")
        pattern = self._header_pattern()
        for at in r.finditer(pattern, start, _HEADER_OVERLAP):
            if at >= self.eof_offset:
                break
            if self.plausible(at, depth=0):
                return at
        if self.eof_offset >= start and r.peek_at(self.eof_offset, 1) == bytes([RecordType.EOF]):
            return self.eof_offset
        raise r.error("no record after the undecodable data, and no EOF byte")

    def _header_pattern(self) -> re.Pattern[bytes]:
        alternatives = [rb"[\x01\x04]\x00\x00..[\x01-\xff][\x20-\x7e]", rb"\x08\x00[\x01-\x0b]\x00"]
        for sid in sorted(self.iterative_ids):
            packed = re.escape(_BE32.pack(sid))
            alternatives.append(rb"[\x02\x03]" + packed)
        return re.compile(b"|".join(alternatives), re.DOTALL)

    def plausible(self, at: int, depth: int) -> bool:
        """Whether a record can start at ``at`` (``depth``: also check one record further)."""
        r = self._r
        if at == self.eof_offset:
            return True
        head = r.peek_at(at, _HEADER_OVERLAP)
        if not head:
            return False
        kind = head[0]
        if kind in (RecordType.SECTION_START, RecordType.SECTION_FULL):
            if len(head) < 6:
                return False
            sid = _BE32.unpack_from(head, 1)[0]
            length = head[5]
            end = 6 + length
            if sid in self.seen_ids or length == 0 or len(head) < end + 8:
                return False
            idstr = head[6:end]
            if not all(0x20 <= c <= 0x7E for c in idstr):
                return False
            version = int(_BE32.unpack_from(head, end + 4)[0])
            return version <= 0xFFFF
        if kind in (RecordType.SECTION_PART, RecordType.SECTION_END):
            return len(head) >= 5 and _BE32.unpack_from(head, 1)[0] in self.iterative_ids
        if kind == RecordType.COMMAND:
            if len(head) < 5:
                return False
            cmd = int.from_bytes(head[1:3], "big")
            length = int.from_bytes(head[3:5], "big")
            if not Command.INVALID < cmd <= max(Command):
                return False
            fixed = COMMAND_LENGTHS.get(Command(cmd))
            return fixed is None or fixed == length
        if kind == RecordType.SECTION_FOOTER and depth > 0:
            return self.plausible(at + 5, depth - 1) if len(head) >= 5 else False
        return False
