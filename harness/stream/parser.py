"""Walk a migration stream (format version 3) and yield its records, in stream order.

The top level follows qemu_loadvm_state / qemu_loadvm_state_main (savevm.c):
``QEVM`` magic, be32 version 3, then records, each starting with a type byte
(:class:`~harness.stream.format.RecordType`). START/FULL: be32 section id,
u8-length idstr, be32 instance id, be32 version; PART/END: be32 section id;
each section body is followed by a footer (0x7e, be32 section id) on
machines newer than pseries-2.3. After EOF comes the VMDESCRIPTION trailer.

The trailer is located before the forward pass (it describes the device
sections, which carry no lengths); RAM and HPT data have decoders of their
own; sections nothing can decode are passed over (:mod:`.resync`) and
reported as :class:`~harness.stream.records.Undecoded`. Memory stays bounded
by the reader's window and the vmdesc, whatever the stream's size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from harness.stream.config import read_configuration
from harness.stream.device import decode_struct
from harness.stream.errors import StreamError
from harness.stream.format import (
    COMMAND_LENGTHS,
    FILE_MAGIC,
    FILE_VERSION,
    FILE_VERSION_COMPAT,
    HTAB_IDSTR,
    HTAB_SECTION_VERSION,
    PPC64_TARGET_PAGE_SIZE,
    RAM_IDSTR,
    RAM_SECTION_VERSION,
    Command,
    RecordType,
)
from harness.stream.htab import HtabDecoder
from harness.stream.ram import RamDecoder
from harness.stream.reader import StreamReader, StreamSource, open_stream
from harness.stream.records import (
    CommandRecord,
    Configuration,
    DeviceState,
    Eof,
    Footer,
    Header,
    HtabData,
    RamData,
    Record,
    SectionHeader,
    SectionInfo,
    SectionKind,
    Undecoded,
    VmDescription,
)
from harness.stream.resync import Resync
from harness.stream.vmdesc import VmDesc, VmDescError, load, locate

_KINDS = {
    RecordType.SECTION_START: SectionKind.START,
    RecordType.SECTION_PART: SectionKind.PART,
    RecordType.SECTION_END: SectionKind.END,
    RecordType.SECTION_FULL: SectionKind.FULL,
}


def iter_records(source: StreamSource) -> Iterator[Record]:
    """Every record of the stream at ``source`` (a path or a binary file object).

    Raises :class:`StreamError` (and nothing else) where the stream cannot be read.
    """
    with open_stream(source) as reader:
        yield from StreamParser(reader).records()


class StreamParser:
    """One pass over one stream; see the module docstring."""

    def __init__(self, reader: StreamReader) -> None:
        self.r = reader
        self.vmdesc: VmDesc | None = None
        self.sections: dict[int, SectionInfo] = {}
        self.page_size = PPC64_TARGET_PAGE_SIZE
        self.footers: bool | None = None  # unknown until a configuration or first section
        self._ignore_shared = False
        self._ram: RamDecoder | None = None
        self._htab = HtabDecoder()
        self._open: SectionInfo | None = None  # section whose body was read, footer pending
        self._resync = Resync(reader, reader.size - 1)

    def records(self) -> Iterator[Record]:
        try:
            yield from self._records()
        except StreamError:
            raise
        except (ValueError, IndexError, OverflowError, RecursionError, struct.error) as exc:
            # Defence in depth: decoders check what they read, but no input may
            # escape as anything but a StreamError.
            raise self.r.error(f"unreadable data ({type(exc).__name__}: {exc})") from exc

    def _records(self) -> Iterator[Record]:
        r = self.r
        r.context = "stream header"
        magic = r.u32()
        if magic != FILE_MAGIC:
            raise r.error(f"not a migration stream: magic 0x{magic:08x}, expected 'QEVM'", 0)
        version = r.u32()
        if version != FILE_VERSION:
            old = " (pre-0.13 format)" if version == FILE_VERSION_COMPAT else ""
            raise r.error(f"stream format version {version}{old}; only version 3 is known", 4)
        self._load_vmdesc()
        yield Header(0, version)
        while True:
            offset = r.tell()
            r.context = "record header"
            kind = r.u8()
            if kind == RecordType.EOF:
                yield Eof(offset)
                break
            if kind == RecordType.CONFIGURATION:
                yield self._configuration(offset)
            elif kind in _KINDS:
                yield from self._section(offset, _KINDS[RecordType(kind)])
            elif kind == RecordType.SECTION_FOOTER:
                yield self._footer(offset)
            elif kind == RecordType.COMMAND:
                yield self._command(offset)
            else:
                raise r.error(f"unknown record type 0x{kind:02x}", offset)
            self._note_footer_use()
        yield from self._trailer()

    # -- pieces ---------------------------------------------------------------

    def _load_vmdesc(self) -> None:
        r = self.r
        where = locate(r)
        if where is None:
            return
        r.context = "VMDESCRIPTION"
        try:
            self.vmdesc = load(r, where)
        except (VmDescError, RecursionError) as exc:
            raise r.error(f"invalid vmdesc JSON: {exc}", where.json_offset) from exc
        self.page_size = self.vmdesc.page_size
        self._resync.eof_offset = where.offset - 1

    def _configuration(self, offset: int) -> Configuration:
        self.r.context = "configuration"
        info = read_configuration(self.r, self.vmdesc.configuration if self.vmdesc else None)
        if info.target_page_bits is not None and self.vmdesc is None:
            self.page_size = 1 << min(info.target_page_bits, 30)
        self._ignore_shared = "x-ignore-shared" in info.capabilities
        if "mapped-ram" in info.capabilities:
            raise self.r.error("mapped-ram streams (file: migration) are not supported", offset)
        self.footers = True  # both came with QEMU 2.4 machine types (hw_compat_2_3)
        return Configuration(offset, info)

    def _section(self, offset: int, kind: SectionKind) -> Iterator[Record]:
        r = self.r
        r.context = f"{kind.value} section header"
        section_id = r.u32()
        if kind in (SectionKind.START, SectionKind.FULL):
            idstr = r.take(r.u8()).decode("ascii", "replace")
            info = SectionInfo(section_id, idstr, r.u32(), r.u32())
            if section_id in self.sections:
                raise r.error(f"section id {section_id} announced twice", offset)
            self.sections[section_id] = info
            self._resync.seen_ids.add(section_id)
            if kind is SectionKind.START:
                self._resync.iterative_ids.add(section_id)
        else:
            known = self.sections.get(section_id)
            if known is None or section_id not in self._resync.iterative_ids:
                raise r.error(f"{kind.value.upper()} for section id {section_id} never started", offset)
            info = known
        yield SectionHeader(offset, kind, info)
        r.context = f"{info.describe()} ({kind.value.upper()})"
        start = r.tell()
        self._open = info
        if info.idstr == RAM_IDSTR:
            self._check_version(info, RAM_SECTION_VERSION)
            ram = self._ram_decoder().read(r)
            yield RamData(start, r.tell(), info, ram)
        elif info.idstr == HTAB_IDSTR:
            self._check_version(info, HTAB_SECTION_VERSION)
            piece = self._htab.read(r)
            yield HtabData(start, r.tell(), info, piece)
        else:
            device = self.vmdesc.device(info.idstr, info.instance_id) if self.vmdesc else None
            if kind is SectionKind.FULL and device is not None:
                state = decode_struct(r, device.state, info.version_id)
                yield DeviceState(start, r.tell(), info, state)
            else:
                yield self._pass_over(info, kind, start)

    def _pass_over(self, info: SectionInfo, kind: SectionKind, start: int) -> Undecoded:
        if kind is not SectionKind.FULL:
            reason = f"no decoder for iterative section {info.idstr!r}"
        elif self.vmdesc is None:
            reason = "no vmdesc in the stream (pseries-2.2 and older suppress it)"
        else:
            reason = "the vmdesc has no entry for this section"
        end = self._resync.find_end(info.section_id, bool(self.footers))
        self.r.seek(end)
        return Undecoded(start, end, info, reason)

    def _footer(self, offset: int) -> Footer:
        r = self.r
        r.context = "section footer"
        section_id = r.u32()
        if self._open is None or section_id != self._open.section_id:
            expected = "no section" if self._open is None else f"section {self._open.section_id}"
            raise r.error(f"footer for section {section_id} where {expected} ended", offset)
        self._open = None
        self.footers = True
        return Footer(offset, section_id)

    def _note_footer_use(self) -> None:
        """After the first section body: a footer must follow now, or never will."""
        if self.footers is None and self._open is not None:
            self.footers = self.r.peek_u8() == RecordType.SECTION_FOOTER

    def _command(self, offset: int) -> CommandRecord:
        r = self.r
        r.context = "command"
        cmd = r.u16()
        length = r.u16()
        if not Command.INVALID < cmd <= max(Command):
            raise r.error(f"unknown command 0x{cmd:x} (length {length})", offset)
        command = Command(cmd)
        fixed = COMMAND_LENGTHS.get(command)
        if fixed is not None and fixed != length:
            raise r.error(f"{command.name} with length {length}, expected {fixed}", offset)
        value = None
        if command is Command.PING:
            value = r.u32()
        elif command is Command.PACKAGED:
            value = r.u32()  # the packaged stream is skipped, not parsed
            r.skip(value)
        else:
            r.skip(length)
        self._open = None
        return CommandRecord(offset, cmd, command.name, length, value)

    def _trailer(self) -> Iterator[Record]:
        r = self.r
        r.context = "VMDESCRIPTION"
        if r.at_end():
            if self.vmdesc is not None:
                raise r.error("EOF before the located vmdesc")
            return
        offset = r.tell()
        kind = r.u8()
        if kind != RecordType.VMDESCRIPTION or self.vmdesc is None:
            raise r.error(f"data after EOF (byte 0x{kind:02x}) that is not a vmdesc", offset)
        if offset != self.vmdesc.offset:
            raise r.error(f"vmdesc marker here, but the trailer is at {self.vmdesc.offset}", offset)
        length = r.u32()
        r.skip(length)
        yield VmDescription(offset, length, self.vmdesc)

    def _ram_decoder(self) -> RamDecoder:
        if self._ram is None:
            self._ram = RamDecoder(self.page_size, self._ignore_shared)
        return self._ram

    def _check_version(self, info: SectionInfo, version: int) -> None:
        if info.version_id != version:
            raise self.r.error(f"{info.idstr!r} version {info.version_id}; only {version} is known")
