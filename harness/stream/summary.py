"""One stream in a page: sections, RAM, HPT, and what the pseries machine sent.

``summarise(path)`` makes one pass over the stream (:mod:`.parser`) and keeps
only the summary, so memory does not depend on the stream's size.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from harness.stream import spapr
from harness.stream.fdt import FdtError, FdtSummary, summarise_fdt
from harness.stream.htab import HtabPiece
from harness.stream.layout import (
    CheckedValue,
    LayoutEntry,
    SubsectionEntry,
    checked_values,
    layout,
    subsections,
)
from harness.stream.parser import StreamParser
from harness.stream.ram import BlockPages, PageCounts, RamBlock
from harness.stream.reader import StreamSource, open_stream
from harness.stream.records import (
    CommandRecord,
    Configuration,
    DeviceState,
    Footer,
    Header,
    HtabData,
    RamData,
    SectionHeader,
    SectionKind,
    Undecoded,
    VmDescription,
)
from harness.stream.render import summary_text, to_jsonable


@dataclass(frozen=True)
class SectionSummary:
    """One section (all its START/PART/END pieces, or its FULL record)."""

    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    kind: str  # "full" or "iterative"
    pieces: int
    offset: int
    size: int  # bytes of its bodies
    decoded: bool
    note: str = ""
    vmsd_name: str = ""
    subsections: tuple[SubsectionEntry, ...] = ()
    layout: tuple[LayoutEntry, ...] = ()
    checked: tuple[CheckedValue, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.idstr, self.instance_id)


@dataclass(frozen=True)
class RamSummary:
    blocks: tuple[RamBlock, ...]
    counts: PageCounts
    per_block: tuple[BlockPages, ...]
    sections: int


@dataclass(frozen=True)
class HtabSummary:
    shift: int | None
    no_hpt: bool
    chunks: int
    valid: int
    invalid: int
    sections: int


@dataclass(frozen=True)
class SpaprSummary:
    """The pseries machine's own section."""

    timebase: spapr.Timebase | None
    caps: tuple[spapr.SpaprCap, ...]
    cas: spapr.CasOptions | None
    fdt: FdtSummary | None
    fdt_note: str = ""


@dataclass(frozen=True)
class StreamSummary:
    source: str
    size: int
    format_version: int
    machine: str | None
    page_size: int
    has_vmdesc: bool
    footers: bool
    capabilities: tuple[str, ...]
    sections: tuple[SectionSummary, ...]
    ram: RamSummary | None
    htab: HtabSummary | None
    spapr: SpaprSummary | None
    commands: tuple[tuple[str, int], ...]
    notes: tuple[str, ...] = field(default=())

    def section(self, idstr: str, instance_id: int = 0) -> SectionSummary | None:
        for s in self.sections:
            if s.idstr == idstr and s.instance_id == instance_id:
                return s
        return None

    def as_dict(self) -> dict[str, Any]:
        data = to_jsonable(self)
        assert isinstance(data, dict)
        return data

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def to_text(self) -> str:
        return summary_text(self)


def summarise(source: StreamSource) -> StreamSummary:
    """Summarise the stream at ``source``; raises StreamError if it cannot be read."""
    with open_stream(source) as reader:
        parser = StreamParser(reader)
        return _Builder(reader.name, reader.size).build(parser)


class _Builder:
    """Folds the record stream into a summary."""

    def __init__(self, source: str, size: int) -> None:
        self.source = source
        self.size = size
        self.version = 0
        self.machine: str | None = None
        self.capabilities: tuple[str, ...] = ()
        self.sections: dict[int, SectionSummary] = {}
        self.ram_blocks: list[RamBlock] = []
        self.ram_counts = PageCounts()
        self.ram_per_block: dict[str, PageCounts] = {}
        self.ram_sections = 0
        self.htab_pieces: list[HtabPiece] = []
        self.htab_shift: int | None = None
        self.spapr: SpaprSummary | None = None
        self.commands: Counter[str] = Counter()
        self.has_vmdesc = False
        self.footers = False

    def build(self, parser: StreamParser) -> StreamSummary:
        for rec in parser.records():
            match rec:
                case Header():
                    self.version = rec.version
                case Configuration():
                    self.machine = rec.info.machine
                    self.capabilities = rec.info.capabilities
                case SectionHeader():
                    self._header(rec)
                case DeviceState():
                    self._device(rec)
                case RamData():
                    self._grow(rec.section.section_id, rec.end - rec.offset)
                    self.ram_sections += 1
                    self.ram_blocks.extend(rec.piece.blocks)
                    self.ram_counts = self.ram_counts + rec.piece.counts
                    for item in rec.piece.per_block:
                        before = self.ram_per_block.get(item.block, PageCounts())
                        self.ram_per_block[item.block] = before + item.counts
                case HtabData():
                    self._grow(rec.section.section_id, rec.end - rec.offset)
                    self.htab_pieces.append(rec.piece)
                    if rec.piece.header not in (0, 0xFFFFFFFF):
                        self.htab_shift = rec.piece.header
                case Undecoded():
                    s = self.sections[rec.section.section_id]
                    self.sections[s.section_id] = replace(
                        s, size=s.size + rec.end - rec.offset, decoded=False, note=rec.reason
                    )
                case Footer():
                    self.footers = True
                case CommandRecord():
                    self.commands[rec.name] += 1
                case VmDescription():
                    self.has_vmdesc = True
        return self._result(parser)

    def _header(self, rec: SectionHeader) -> None:
        info = rec.section
        existing = self.sections.get(info.section_id)
        if existing is None:
            kind = "full" if rec.kind is SectionKind.FULL else "iterative"
            self.sections[info.section_id] = SectionSummary(
                info.section_id, info.idstr, info.instance_id, info.version_id, kind, 1,
                rec.offset, 0, True,
            )
        else:
            self.sections[info.section_id] = replace(existing, pieces=existing.pieces + 1)

    def _grow(self, section_id: int, size: int) -> None:
        s = self.sections[section_id]
        self.sections[section_id] = replace(s, size=s.size + size)

    def _device(self, rec: DeviceState) -> None:
        s = self.sections[rec.section.section_id]
        self.sections[s.section_id] = replace(
            s,
            size=s.size + rec.end - rec.offset,
            vmsd_name=rec.state.vmsd_name,
            subsections=subsections(rec.state),
            checked=checked_values(rec.state),
        )
        if rec.section.idstr == spapr.SPAPR_IDSTR and rec.section.instance_id == 0:
            self.spapr = _spapr_summary(rec)

    def _result(self, parser: StreamParser) -> StreamSummary:
        vmdesc = parser.vmdesc
        sections = []
        for s in self.sections.values():
            dev = vmdesc.device(s.idstr, s.instance_id) if vmdesc else None
            sections.append(replace(s, layout=layout(dev.state)) if dev and s.decoded else s)
        notes = tuple(
            f"{s.idstr} (section {s.section_id}): not decoded, {s.note}"
            for s in sections if not s.decoded
        )
        if vmdesc is None:
            notes += ("no vmdesc: device sections listed but not decoded",)
        ram = None
        if self.ram_sections:
            ram = RamSummary(
                tuple(self.ram_blocks), self.ram_counts,
                tuple(BlockPages(k, v) for k, v in self.ram_per_block.items()), self.ram_sections,
            )
        htab = None
        if self.htab_pieces:
            htab = HtabSummary(
                self.htab_shift,
                any(p.no_hpt for p in self.htab_pieces),
                sum(p.chunks for p in self.htab_pieces),
                sum(p.valid for p in self.htab_pieces),
                sum(p.invalid for p in self.htab_pieces),
                len(self.htab_pieces),
            )
        return StreamSummary(
            source=self.source,
            size=self.size,
            format_version=self.version,
            machine=self.machine,
            page_size=parser.page_size,
            has_vmdesc=self.has_vmdesc,
            footers=self.footers,
            capabilities=self.capabilities,
            sections=tuple(sections),
            ram=ram,
            htab=htab,
            spapr=self.spapr,
            commands=tuple(sorted(self.commands.items())),
            notes=notes,
        )


def _spapr_summary(rec: DeviceState) -> SpaprSummary:
    state = rec.state
    blob = spapr.dtb_blob(state)
    fdt = None
    note = "" if blob is not None else "no spapr_dtb subsection (pseries-2.8 and older)"
    if blob is not None:
        try:
            fdt = summarise_fdt(blob)
        except FdtError as exc:
            note = f"spapr_dtb blob unreadable: {exc}"
    return SpaprSummary(spapr.timebase(state), spapr.caps(state), spapr.cas_options(state), fdt, note)
