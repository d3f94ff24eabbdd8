"""Small seeds cut from a real recorded stream: its own bytes, big payloads shrunk.

A real stream is megabytes (RAM pages, a 2 MiB TCE table, the 2 MiB device
tree buffer): too slow to parse a million times. Its records are kept as
QEMU wrote them, but large RAM sections are cut after their first page
records (then EOS), and large fields of device sections are shrunk with
their vmdesc entries (a compressed array keeps fewer elements, a buffer
fewer bytes, a device tree is packed by libfdt; enclosing struct sizes
follow), so each section still decodes. The device sections are bundled
into seeds of a few tens of KiB, each with the configuration record and a
vmdesc that lists the devices it holds; one more seed holds the RAM, HPT
and command records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.stream.format import RAM_CONTINUE, RAM_EOS, RAM_MULTIFD_FLUSH, RAM_PAGE, RAM_ZERO
from harness.stream.fuzz.writer import BODY, FIELD, RAM, RECORD, SUBSECTION, Seed, StreamWriter
from harness.stream.parser import StreamParser
from harness.stream.reader import StreamReader, open_stream
from harness.stream.records import (
    CommandRecord,
    Configuration,
    DeviceState,
    Eof,
    Footer,
    HtabData,
    RamData,
    Record,
    SectionHeader,
    SectionKind,
    Undecoded,
)
from harness.stream.values import Elided, IntArray, StructArray, StructValue
from harness.stream.vmdesc import StructDesc, parse

MAX_FIELD = 4096  # bytes a shrunk field keeps
MAX_SECTION = 16 << 10  # larger RAM / HPT / undecoded sections are cut or left out
BUNDLE = 8 << 10  # device sections per seed, in bytes
RAM_KEPT = 8 << 10  # bytes of page records a cut RAM section keeps
_FDT_MAGIC = b"\xd0\x0d\xfe\xed"


@dataclass
class _Item:
    """One top-level record of the real stream (a section with its body and footer)."""

    start: int
    end: int
    header: SectionHeader | None = None
    body: Record | None = None
    edits: list[tuple[int, int, bytes]] = field(default_factory=list)  # (offset, bytes removed, put)
    desc: dict[str, Any] | None = None  # the (shrunk) vmdesc entry of a device section
    tail: bytes = b""  # appended after the kept bytes (a cut RAM section's EOS and footer)
    ram: list[int] = field(default_factory=list)  # where the kept RAM records start


@dataclass(frozen=True)
class RealSeeds:
    path: Path
    seeds: tuple[Seed, ...]
    fdts: tuple[bytes, ...]  # device trees found (for the generator's spapr sections)


def real_seeds(path: Path) -> RealSeeds:
    """Seeds from the stream at ``path`` (raises StreamError if it cannot be read)."""
    with open_stream(path) as r:
        parser = StreamParser(r)
        items = _items(parser.records())
        vmdesc = json.loads(parser.vmdesc.raw) if parser.vmdesc else None
        devices = {(d["name"], d["instance_id"] & 0xFFFFFFFF): d for d in (vmdesc or {}).get("devices", [])}
        fdts: list[bytes] = []
        config: list[_Item] = []
        iterative: list[_Item] = []
        full: list[_Item] = []
        for item in items:
            if item.header is None:
                (config if item.body is None else iterative).append(item)
            elif isinstance(item.body, DeviceState):
                _shrink_device(item, item.body, devices, fdts)
                full.append(item)
            elif isinstance(item.body, RamData) and item.end - item.start > MAX_SECTION:
                if _cut_ram(r, item, parser.page_size):
                    iterative.append(item)
            elif item.end - item.start <= MAX_SECTION:
                (full if item.header.kind is SectionKind.FULL else iterative).append(item)
        bundles: list[list[_Item]] = [[]]
        for item in full:
            if bundles[-1] and _size(bundles[-1]) + _size([item]) > BUNDLE:
                bundles.append([])
            bundles[-1].append(item)
        seeds = [_seed(r, f"real:{path.name}:ram", config + iterative, vmdesc)]
        seeds += [_seed(r, f"real:{path.name}:devices{n}", config + b, vmdesc)
                  for n, b in enumerate(bundles) if b]
    return RealSeeds(path, tuple(seeds), tuple(fdts))


def _items(records: Iterable[Record]) -> list[_Item]:
    """Top-level records with their spans; the configuration and commands have no header."""
    items: list[_Item] = []
    for rec in records:
        if isinstance(rec, Configuration):
            items.append(_Item(rec.offset, rec.offset))
        elif isinstance(rec, CommandRecord):
            items.append(_Item(rec.offset, rec.offset, body=rec))
        elif isinstance(rec, SectionHeader):
            items.append(_Item(rec.offset, rec.offset, header=rec))
        elif isinstance(rec, DeviceState | RamData | HtabData | Undecoded):
            items[-1].body = rec
        elif isinstance(rec, Footer | Eof):
            if items:
                items[-1].end = rec.offset + (5 if isinstance(rec, Footer) else 0)
            if isinstance(rec, Eof):
                break
            continue
        if len(items) > 1 and items[-2].end == items[-2].start:
            items[-2].end = items[-1].start
    return items


def _size(items: list[_Item]) -> int:
    return sum(i.end - i.start - sum(n - len(new) for _, n, new in i.edits) + len(i.tail) for i in items)


def _cut_ram(r: StreamReader, item: _Item, page_size: int) -> bool:
    """Keep the first page records of a large RAM section; False if it does not start with pages."""
    assert isinstance(item.body, RamData)
    body = item.body.offset
    buf = r.peek_at(body, RAM_KEPT + page_size + 300)
    pos = 0
    while pos < RAM_KEPT and pos + 8 <= len(buf):
        word = int.from_bytes(buf[pos : pos + 8], "big")
        kind = word & (page_size - 1) & ~RAM_CONTINUE
        if kind == RAM_MULTIFD_FLUSH:
            pos += 8
            continue
        if kind not in (RAM_ZERO, RAM_PAGE):
            break
        step = 8 + (0 if word & RAM_CONTINUE else 1 + buf[pos + 8]) + (1 if kind == RAM_ZERO else page_size)
        if pos + step > len(buf):
            break
        item.ram.append(body + pos)
        pos += step
    if pos == 0:
        return False
    footer = r.peek_at(item.body.end, 5) if item.end > item.body.end else b""
    item.edits.append((body + pos, item.end - body - pos, b""))
    item.tail = RAM_EOS.to_bytes(8, "big") + footer
    return True


def _shrink_device(item: _Item, rec: DeviceState, devices: dict[tuple[str, int], Any],
                   fdts: list[bytes]) -> None:
    info = rec.section
    entry = devices.get((info.idstr, info.instance_id))
    if entry is None:
        return
    item.desc = json.loads(json.dumps(entry))
    desc = parse({"page_size": 4096, "devices": [item.desc]}).devices[0].state
    _shrink(rec.state, desc, item.desc, item.edits)
    fdts.extend(new for _, _, new in item.edits if new.startswith(_FDT_MAGIC))


def _packed(blob: bytes) -> bytes:
    """A device tree without its free space (QEMU sends a 2 MiB buffer around 15 KiB of tree)."""
    import libfdt

    try:
        fdt = libfdt.Fdt(bytearray(blob))
        fdt.pack()
        return bytes(fdt.as_bytearray())
    except libfdt.FdtException:
        return blob[:MAX_FIELD]


def _shrink(state: StructValue, desc: StructDesc, jdesc: dict[str, Any],
            edits: list[tuple[int, int, bytes]]) -> int:
    """Note edits that shrink large fields of ``state``, fix ``jdesc`` to match; the bytes removed."""
    removed = 0
    values = iter(state.fields)
    for fdesc, jf in zip(desc.fields, jdesc.get("fields", []), strict=False):
        first = next(values, None)
        if first is None:
            break
        value = first.value
        whole = isinstance(value, IntArray | StructArray) or (
            isinstance(value, Elided) and fdesc.count > 1 and first.size == fdesc.size * fdesc.count)
        if fdesc.count > 1 and not whole:
            for _ in range(fdesc.count - 1):  # one field per element: left as it is
                next(values, None)
            continue
        if whole:
            keep = max(1, MAX_FIELD // max(fdesc.size, 1))
            if fdesc.count > keep:
                edits.append((first.offset + keep * fdesc.size, (fdesc.count - keep) * fdesc.size, b""))
                removed += edits[-1][1]
                jf["array_len"] = keep
        elif isinstance(value, StructValue) and fdesc.struct is not None:
            inner = _shrink(value, fdesc.struct, jf.get("struct", jf), edits)
            jf["size"] -= inner
            removed += inner
        elif isinstance(value, bytes) and value.startswith(_FDT_MAGIC):
            tree = _packed(value)
            edits.append((first.offset, first.size, tree))
            removed += first.size - len(tree)
            jf["size"] = len(tree)
        elif isinstance(value, bytes | Elided) and first.size > MAX_FIELD:
            edits.append((first.offset + MAX_FIELD, first.size - MAX_FIELD, b""))
            removed += edits[-1][1]
            jf["size"] = MAX_FIELD
    for sub, subdesc, jsub in zip(state.subsections, desc.subsections, jdesc.get("subsections", []),
                                  strict=False):
        removed += _shrink(sub.state, subdesc, jsub, edits)
    return removed


def _seed(r: StreamReader, origin: str, items: list[_Item], vmdesc: dict[str, Any] | None) -> Seed:
    w = StreamWriter()
    kept = []
    for item in items:
        begin = w.pos
        w.mark(RECORD)
        at = item.start
        for offset, n, new in sorted(item.edits):
            w.raw(r.peek_at(at, offset - at))
            if new.startswith(_FDT_MAGIC):
                w.marks.regions.append((w.pos, w.pos + len(new)))
            w.raw(new)
            at = offset + n
        w.raw(r.peek_at(at, item.end - at)).raw(item.tail)
        _note(w, item, begin)
        if item.header is not None:
            w.marks.sections.append((begin, w.pos))
        if item.desc is not None:
            kept.append(item.desc)
    w.eof()
    if vmdesc is not None:
        w.vmdesc({**vmdesc, "devices": kept})
    return w.seed(origin)


def _note(w: StreamWriter, item: _Item, begin: int) -> None:
    """Marks of one copied item: length fields, body, RAM records, fields, FDT blob."""

    def moved(offset: int) -> int:
        return begin + offset - item.start - sum(n - len(new) for at, n, new in item.edits if at < offset)

    m = w.marks
    if item.header is None:
        m.lengths.append((begin + (1 if item.body is None else 3), 4 if item.body is None else 2))
        return
    if item.header.kind in (SectionKind.START, SectionKind.FULL):
        m.lengths.append((begin + 5, 1))
    body = item.body
    if body is None:
        return
    assert not isinstance(body, CommandRecord)
    m.add(BODY, moved(getattr(body, "offset", item.start)))
    for offset in item.ram:
        m.add(RAM, moved(offset))
    if isinstance(body, DeviceState):
        _note_fields(w, body.state, moved)


def _note_fields(w: StreamWriter, state: StructValue, moved: Callable[[int], int]) -> None:
    for f in state.fields:
        w.marks.add(FIELD, moved(f.offset))
        if isinstance(f.value, StructValue):
            _note_fields(w, f.value, moved)
    for sub in state.subsections:
        w.marks.add(SUBSECTION, moved(sub.offset))
        _note_fields(w, sub.state, moved)

