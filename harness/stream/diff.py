"""Structural comparison of two streams, worst first.

Each finding says what differs, in which direction it matters (a stream
from ``a`` loaded by ``b``'s QEMU, or the reverse) and how bad it is:

* ``breaks``: the destination refuses the stream. QEMU's loader does so for
  an unknown section (savevm.c qemu_loadvm_section_start_full: "Unknown
  savevm section or instance"), a section version above its own ("... is too
  new"), a different machine type or page size (savevm.c
  configuration_post_load), a differing value of a field of an "equal" type
  or an ``int32 le`` value above its own (vmstate-types.c), an unknown RAM
  block (ram.c parse_ramblocks), a spapr cap above its own level
  (spapr_caps.c spapr_caps_post_migration), or - at the same section version
  - a different field layout, since then both sides disagree about the bytes.
* ``may break``: depends on what the destination knows, which one stream
  cannot show: a subsection it never saw (-ENOENT in vmstate_subsection_load
  if it does not know it), a section version below its own (fine down to
  its minimum_version_id), a RAM block of another size (fine if resizable).
* ``changed``: differs without affecting loading (fields of another section
  version, values QEMU does not check).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from harness.stream.layout import CHECKED_TYPES, CheckedValue, LayoutEntry
from harness.stream.reader import StreamSource
from harness.stream.render import table, to_jsonable
from harness.stream.summary import SectionSummary, StreamSummary, summarise


class Impact(enum.IntEnum):
    BREAKS = 0
    MAY_BREAK = 1
    CHANGED = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


class Direction(enum.Enum):
    A_TO_B = "a->b"
    B_TO_A = "b->a"
    BOTH = "both"


@dataclass(frozen=True)
class Finding:
    impact: Impact
    direction: Direction
    where: str
    what: str
    detail: str


@dataclass(frozen=True)
class StreamDiff:
    a: str
    b: str
    findings: tuple[Finding, ...]

    @property
    def breaking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.impact is Impact.BREAKS)

    def breaks(self, direction: Direction) -> bool:
        """Whether a stream made like ``a`` (a->b) or ``b`` (b->a) would be refused."""
        return any(f.direction in (direction, Direction.BOTH) for f in self.breaking)

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "findings": [{**to_jsonable(f), "impact": f.impact.label} for f in self.findings],
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def to_text(self) -> str:
        head = [f"a: {self.a}", f"b: {self.b}"]
        if not self.findings:
            return "\n".join([*head, "no structural differences"]) + "\n"
        rows = [[f.impact.label, f.direction.value, f.where, f.what, f.detail] for f in self.findings]
        return "\n".join(head + table(["impact", "dir", "where", "what", "detail"], rows)) + "\n"


def diff(a: StreamSource | StreamSummary, b: StreamSource | StreamSummary) -> StreamDiff:
    """Compare two streams (paths, file objects, or their summaries)."""
    sa = a if isinstance(a, StreamSummary) else summarise(a)
    sb = b if isinstance(b, StreamSummary) else summarise(b)
    findings: list[Finding] = []
    findings += _configuration(sa, sb)
    findings += _sections(sa, sb)
    findings += _ram(sa, sb)
    findings += _caps(sa, sb)
    findings.sort(key=lambda f: (f.impact, f.where, f.what))
    return StreamDiff(sa.source, sb.source, tuple(findings))


def _one_way(a_only: bool) -> Direction:
    return Direction.A_TO_B if a_only else Direction.B_TO_A


def _configuration(a: StreamSummary, b: StreamSummary) -> list[Finding]:
    out = []
    if a.machine != b.machine:
        impact = Impact.BREAKS if a.machine and b.machine else Impact.MAY_BREAK
        out.append(Finding(impact, Direction.BOTH, "configuration", "machine type",
                           f"{a.machine} vs {b.machine}"))
    if a.page_size != b.page_size:
        out.append(Finding(Impact.BREAKS, Direction.BOTH, "configuration", "target page size",
                           f"{a.page_size} vs {b.page_size}"))
    if set(a.capabilities) != set(b.capabilities):
        out.append(Finding(Impact.BREAKS, Direction.BOTH, "configuration",
                           "migration capabilities", f"{list(a.capabilities)} vs {list(b.capabilities)}"))
    return out


def _sections(a: StreamSummary, b: StreamSummary) -> list[Finding]:
    out: list[Finding] = []
    by_a = {s.key: s for s in a.sections}
    by_b = {s.key: s for s in b.sections}
    for key in [*by_a, *(k for k in by_b if k not in by_a)]:
        sa, sb = by_a.get(key), by_b.get(key)
        where = f"{key[0]} 0x{key[1]:x}"
        if sa is None or sb is None:
            only = "a" if sb is None else "b"
            out.append(Finding(Impact.BREAKS, _one_way(sb is None), where, f"section only in {only}",
                               f"the other QEMU has no section {key[0]!r} instance 0x{key[1]:x}"))
            continue
        out += _section_pair(where, sa, sb)
    return out


def _section_pair(where: str, a: SectionSummary, b: SectionSummary) -> list[Finding]:
    out = []
    same_version = a.version_id == b.version_id
    if not same_version:
        newer_a = a.version_id > b.version_id
        detail = f"{a.version_id} vs {b.version_id}"
        out.append(Finding(Impact.BREAKS, _one_way(newer_a), where, "section version", detail))
        out.append(Finding(Impact.MAY_BREAK, _one_way(not newer_a), where,
                           "section version below the destination's", detail))
    subs_a = {(e.path, e.name): e.version for e in a.subsections}
    subs_b = {(e.path, e.name): e.version for e in b.subsections}
    for key in [*subs_a, *(k for k in subs_b if k not in subs_a)]:
        name = "/".join(p for p in key if p)
        va, vb = subs_a.get(key), subs_b.get(key)
        if va is None or vb is None:
            only_a = vb is None
            out.append(Finding(Impact.MAY_BREAK, _one_way(only_a), where,
                               f"subsection only in {'a' if only_a else 'b'}", name))
        elif va != vb:
            out.append(Finding(Impact.BREAKS, _one_way(va > vb), where, "subsection version",
                               f"{name}: {va} vs {vb}"))
    if a.decoded and b.decoded:
        out += _layout(where, a.layout, b.layout, same_version)
        out += _checked(where, a.checked, b.checked)
    return out


_BYTES_TYPES = frozenset({"buffer", "unused_buffer", "bitmap", "unknown", "vstruct"})


def _layout(where: str, a: tuple[LayoutEntry, ...], b: tuple[LayoutEntry, ...],
            same_version: bool) -> list[Finding]:
    """Field layouts compared: names and types, then the bytes they occupy.

    Renamed or split fields over the same bytes (e.g. a field retired into
    ``unused``) keep the wire format; a buffer of another size may be a
    variable-length one (VMSTATE_VBUFFER, sized by an earlier field).
    """
    # Fields of subsections present on one side only are reported as the subsection.
    common = {e.path.split(":")[0] for e in a if ":" in e.path} & {
        e.path.split(":")[0] for e in b if ":" in e.path}
    la = [e for e in a if ":" not in e.path or e.path.split(":")[0] in common]
    lb = [e for e in b if ":" not in e.path or e.path.split(":")[0] in common]
    if la == lb:
        return []
    if not same_version:
        return [Finding(Impact.CHANGED, Direction.BOTH, where, "field layout", _changes(la, lb))]
    if [(e.path, e.type) for e in la] == [(e.path, e.type) for e in lb]:
        out = []
        for ea, eb in zip(la, lb, strict=True):
            if ea == eb or ea.type == "struct":
                continue
            impact = Impact.MAY_BREAK if ea.type in _BYTES_TYPES else Impact.BREAKS
            out.append(Finding(impact, Direction.BOTH, where, f"{ea.type} size",
                               f"{ea.path}: {_entry(ea)} vs {_entry(eb)} (same section version)"))
        return out
    if _wire(la) == _wire(lb):
        return [Finding(Impact.CHANGED, Direction.BOTH, where,
                        "fields renamed, split or retired over the same bytes", _changes(la, lb))]
    return [Finding(Impact.BREAKS, Direction.BOTH, where, "field layout differs at the same version",
                    _changes(la, lb))]


def _wire(entries: list[LayoutEntry]) -> list[tuple[str, int]]:
    """What the destination reads: byte runs, and the fields it checks (by type and width)."""
    out: list[tuple[str, int]] = []
    for e in entries:
        if e.type == "struct":
            continue
        kind = e.type if e.type in CHECKED_TYPES else "bytes"
        size = e.size * e.count
        if kind == "bytes" and out and out[-1][0] == "bytes":
            out[-1] = ("bytes", out[-1][1] + size)
        else:
            out.append((kind, size))
    return out


def _changes(la: list[LayoutEntry], lb: list[LayoutEntry]) -> str:
    names_a = {e.path: e for e in la}
    names_b = {e.path: e for e in lb}
    changes = []
    for path in [*names_a, *(p for p in names_b if p not in names_a)]:
        ea, eb = names_a.get(path), names_b.get(path)
        if ea is None:
            changes.append(f"+{path}")
        elif eb is None:
            changes.append(f"-{path}")
        elif ea != eb:
            changes.append(f"{path}: {_entry(ea)} -> {_entry(eb)}")
    if not changes:
        changes.append("same fields in another order")
    return "; ".join(changes[:8]) + (f"; ... ({len(changes)} in all)" if len(changes) > 8 else "")


def _entry(e: LayoutEntry) -> str:
    return f"{e.type}/{e.size}" + (f"x{e.count}" if e.count > 1 else "")


def _checked(where: str, a: tuple[CheckedValue, ...], b: tuple[CheckedValue, ...]) -> list[Finding]:
    out = []
    vb = {c.path: c for c in b}
    for ca in a:
        cb = vb.get(ca.path)
        if cb is None or cb.type != ca.type or cb.value == ca.value:
            continue
        if ca.type == "int32 le" and isinstance(ca.value, int) and isinstance(cb.value, int):
            direction = _one_way(ca.value > cb.value)
            rule = "must not exceed the destination's"
        else:
            direction = Direction.BOTH
            rule = "must be equal"
        out.append(Finding(Impact.BREAKS, direction, where, f"checked field ({ca.type})",
                           f"{ca.path}: {ca.value} vs {cb.value} ({rule})"))
    return out


def _ram(a: StreamSummary, b: StreamSummary) -> list[Finding]:
    if a.ram is None or b.ram is None:
        return []
    out = []
    ba = {blk.name: blk.size for blk in a.ram.blocks}
    bb = {blk.name: blk.size for blk in b.ram.blocks}
    for name in [*ba, *(n for n in bb if n not in ba)]:
        if name not in ba or name not in bb:
            out.append(Finding(Impact.BREAKS, _one_way(name in ba), f"ram {name}",
                               "RAM block on one side only", f"block {name!r} unknown to the other"))
        elif ba[name] != bb[name]:
            out.append(Finding(Impact.MAY_BREAK, Direction.BOTH, f"ram {name}", "RAM block size",
                               f"0x{ba[name]:x} vs 0x{bb[name]:x}"))
    return out


def _caps(a: StreamSummary, b: StreamSummary) -> list[Finding]:
    if a.spapr is None or b.spapr is None:
        return []
    out = []
    ca = {c.name: c for c in a.spapr.caps}
    cb = {c.name: c for c in b.spapr.caps}
    for name in sorted(set(ca) | set(cb)):
        x, y = ca.get(name), cb.get(name)
        if x is not None and y is not None and x.level != y.level:
            out.append(Finding(Impact.BREAKS, _one_way(x.level > y.level), "spapr", f"cap {name}",
                               f"{x.meaning} vs {y.meaning} (the destination refuses a higher level)"))
        elif (x is None) != (y is None):
            sent = x or y
            assert sent is not None
            out.append(Finding(Impact.MAY_BREAK, Direction.BOTH, "spapr", f"cap {name}",
                               f"{sent.meaning} on one side, the machine default on the other"))
    return out
