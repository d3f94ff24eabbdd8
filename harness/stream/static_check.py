"""Compare two ``-dump-vmstate`` dumps, source to destination, like QEMU's vmstate-static-checker.py.

A dump (savevm.c dump_vmstate_json_to_file) lists every device class with a
vmsd: ``version_id``, ``minimum_version_id``, a ``Description`` with
``Fields`` (field, version_id, field_exists, size, num, nested Description)
and ``Subsections``. Reading from src to dst, as the checker does: a section
missing at the destination, a version above the destination's or below its
minimum, fields that do not line up (renamed, removed, resized; an ``unused``
gap may stand for several fields, and fields may have moved into a substruct
without changing the wire), and subsections the destination lacks.

Beyond the checker: a finding on a field that only exists conditionally
(``field_exists``: sent only for some machine types or states) is "may
break", and ``only`` restricts the check to the vmsd names a machine really
has (e.g. the sections of a recorded stream).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from harness.stream.diff import Impact
from harness.stream.render import table

Json = Mapping[str, Any]

# Section names that changed between QEMU versions (vmstate-static-checker.py).
SECTION_RENAMES = {"ICH9 LPC": "ICH9-LPC", "e1000-82540em": "e1000"}
# Field renames that kept the wire format, per description (the pseries ones of the checker).
FIELD_RENAMES: dict[str, list[str]] = {
    "spapr_pci": ["dma_liobn[0]", "mig_liobn", "mem_win_addr", "mig_mem_win_addr",
                  "mem_win_size", "mig_mem_win_size", "io_win_addr", "mig_io_win_addr",
                  "io_win_size", "mig_io_win_size"],
}


@dataclass(frozen=True)
class StaticFinding:
    impact: Impact
    section: str
    description: str
    what: str
    detail: str


@dataclass(frozen=True)
class StaticCheck:
    src_machine: str
    dst_machine: str
    findings: tuple[StaticFinding, ...]

    @property
    def errors(self) -> int:
        """Findings that break migration (the checker's exit code counts these, capped at 255)."""
        return sum(1 for f in self.findings if f.impact is Impact.BREAKS)

    def as_dict(self) -> dict[str, Any]:
        return {
            "src_machine": self.src_machine,
            "dst_machine": self.dst_machine,
            "findings": [
                {"impact": f.impact.label, "section": f.section, "description": f.description,
                 "what": f.what, "detail": f.detail}
                for f in self.findings
            ],
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def to_text(self) -> str:
        head = [f"src {self.src_machine} -> dst {self.dst_machine}: {self.errors} breaking"]
        rows = [[f.impact.label, f.section, f.description, f.what, f.detail] for f in self.findings]
        return "\n".join(head + table(["impact", "section", "description", "what", "detail"], rows)) + "\n"


def static_check(
    dump_a: Json, dump_b: Json, *, reverse: bool = False, only: Collection[str] | None = None
) -> StaticCheck:
    """Findings for migrating from ``dump_a``'s QEMU to ``dump_b``'s (or back, ``reverse``)."""
    src, dst = (dump_b, dump_a) if reverse else (dump_a, dump_b)
    checker = _Checker(only)
    for name, section in src.items():
        if name == "vmschkmachine":
            continue
        if only is not None and _vmsd_name(section) not in only:
            continue
        target = name if name in dst else SECTION_RENAMES.get(name) or _renamed_from(name)
        if target is None or target not in dst:
            checker.add(Impact.BREAKS, name, "", "section missing",
                        f"section {name!r} does not exist in the destination")
            continue
        checker.section(name, section, dst[target])
    machine = _machine(src), _machine(dst)
    if machine[0] != machine[1]:
        checker.add(Impact.CHANGED, "vmschkmachine", "", "machine type",
                    f"checking different machine types: {machine[0]!r}, {machine[1]!r}")
    findings = sorted(checker.findings, key=lambda f: (f.impact, f.section))
    return StaticCheck(machine[0], machine[1], tuple(findings))


def _renamed_from(name: str) -> str | None:
    for old, new in SECTION_RENAMES.items():
        if new == name:
            return old
    return None


def _machine(dump: Json) -> str:
    entry = dump.get("vmschkmachine")
    return str(entry.get("Name", "")) if isinstance(entry, Mapping) else ""


def _vmsd_name(section: Json) -> str:
    desc = section.get("Description")
    return str(desc.get("name", "")) if isinstance(desc, Mapping) else ""


class _Checker:
    def __init__(self, only: Collection[str] | None) -> None:
        self.only = only
        self.findings: list[StaticFinding] = []
        self._conditional = False  # inside a field_exists field: findings only "may break"

    def add(self, impact: Impact, sec: str, desc: str, what: str, detail: str) -> None:
        if impact is Impact.BREAKS and self._conditional:
            impact = Impact.MAY_BREAK
            detail += " (the field is sent conditionally: field_exists)"
        self.findings.append(StaticFinding(impact, sec, desc, what, detail))

    def section(self, sec: str, s: Json, d: Json) -> None:
        self.version(s, d, sec, "")
        for entry in s:
            if entry not in d:
                self.add(Impact.BREAKS, sec, "", "entry missing", f"entry {entry!r} missing")
            elif entry == "Description":
                self.description(s[entry], d[entry], sec)

    def version(self, s: Json, d: Json, sec: str, desc: str) -> None:
        sv, dv = s.get("version_id", 0), d.get("version_id", 0)
        if sv > dv:
            self.add(Impact.BREAKS, sec, desc, "version too new",
                     f"version {sv} > destination's {dv}")
        if "minimum_version_id" in d and sv < d["minimum_version_id"]:
            self.add(Impact.BREAKS, sec, desc, "version below minimum",
                     f"version {sv} < destination's minimum {d['minimum_version_id']}")

    def description(self, s: Json, d: Json, sec: str) -> None:
        name = str(s.get("name", ""))
        self.version(s, d, sec, name)
        if not _fields_match(sec, name, str(d.get("name", ""))):
            self.add(Impact.BREAKS, sec, name, "description missing",
                     f"description {name!r} missing, got {d.get('name')!r} instead")
            return
        for key in s:
            if key not in d:
                self.add(Impact.BREAKS, sec, name, "entry missing", f"entry {key!r} missing")
            elif key == "Fields":
                self.fields(s[key], d[key], name, sec)
            elif key == "Subsections":
                self.subsections(s[key], d[key], name, sec)

    def subsections(self, src: list[Json], dst: list[Json], desc: str, sec: str) -> None:
        for s_item in src:
            matches = [d for d in dst if d.get("name") == s_item.get("name")]
            if not matches:
                self.add(Impact.BREAKS, sec, desc, "subsection missing",
                         f"subsection {s_item.get('name')!r} not found in the destination")
            for d_item in matches:
                self.description(s_item, d_item, sec)

    def fields(self, src: list[Json], dst: list[Json], desc: str, sec: str) -> None:
        """The checker's check_fields: walk both lists, entering substructs, absorbing unused."""
        s_stack: list[Iterator[Json]] = []
        d_stack: list[Iterator[Json]] = []
        s_iter, d_iter = iter(src), iter(dst)
        advance_src = advance_dst = True
        unused = 0
        s_item: Json = {}
        d_item: Json = {}
        while True:
            if advance_src:
                try:
                    s_item = next(s_iter)
                except StopIteration:
                    if not s_stack:
                        return
                    s_iter = s_stack.pop()
                    continue
            elif unused == 0:
                advance_src = True
            if advance_dst:
                try:
                    d_item = next(d_iter)
                except StopIteration:
                    if not d_stack:
                        self._field_finding(s_item, sec, desc, "field removed",
                                            f"expected field {s_item.get('field')!r}, "
                                            "the destination has no further fields")
                        return
                    d_iter = d_stack.pop()
                    advance_src = False
                    continue
            elif unused == 0:
                advance_dst = True
            if unused:
                item = s_item if not advance_dst else d_item
                unused -= int(item.get("size", 0))
                if unused == 0:
                    advance_src = advance_dst = True
                    continue
                if unused < 0:
                    self._field_finding(item, sec, desc, "unused size mismatch",
                                        f"unused size mismatch near {item.get('field')!r}")
                    return
                continue
            if not _fields_match(desc, str(s_item.get("field")), str(d_item.get("field"))):
                if _in_substruct(d_item, str(s_item.get("field"))):
                    d_stack.append(d_iter)
                    d_iter = iter(d_item["Description"]["Fields"])
                    advance_src = False
                    continue
                if _in_substruct(s_item, str(d_item.get("field"))):
                    s_stack.append(s_iter)
                    s_iter = iter(s_item["Description"]["Fields"])
                    advance_dst = False
                    continue
                if "unused" in (s_item.get("field"), d_item.get("field")):
                    s_size, d_size = _size_total(s_item), _size_total(d_item)
                    if s_size == d_size:
                        continue
                    if d_item.get("field") == "unused":
                        advance_dst = False
                        unused = d_size - s_size
                        continue
                    advance_src = False
                    unused = s_size - d_size
                    continue
                self._field_finding(s_item, sec, desc, "field mismatch",
                                    f"expected field {s_item.get('field')!r}, got "
                                    f"{d_item.get('field')!r}; rest of the description not checked",
                                    other=d_item)
                return
            self._field_pair(s_item, d_item, sec, desc)

    def _field_pair(self, s: Json, d: Json, sec: str, desc: str) -> None:
        field = str(s.get("field"))
        if s.get("version_id", 0) > d.get("version_id", 0):
            self._field_finding(s, sec, desc, "field version too new",
                                f"field {field!r} version {s.get('version_id')} > {d.get('version_id')}")
        if "Description" not in s and s.get("size") != d.get("size"):
            self._field_finding(s, sec, desc, "size mismatch",
                                f"field {field!r} size {s.get('size')} vs {d.get('size')}")
        if "Description" in s:
            if "Description" not in d:
                self._field_finding(s, sec, desc, "description missing",
                                    f"field {field!r}: destination has no description")
                return
            outer, self._conditional = self._conditional, self._conditional or bool(s.get("field_exists"))
            try:
                self.description(s["Description"], d["Description"], sec)
            finally:
                self._conditional = outer

    def _field_finding(
        self, item: Json, sec: str, desc: str, what: str, detail: str, other: Json | None = None
    ) -> None:
        """A breaking finding, or "may break" when either side's field is only sent conditionally
        (a destination skips its own conditional field when its test is false)."""
        conditional = bool(item.get("field_exists")) or bool(other and other.get("field_exists"))
        outer, self._conditional = self._conditional, self._conditional or conditional
        try:
            self.add(Impact.BREAKS, sec, desc, what, detail)
        finally:
            self._conditional = outer


def _fields_match(desc: str, s_field: str, d_field: str) -> bool:
    if s_field == d_field:
        return True
    renames = FIELD_RENAMES.get(desc, [])
    return s_field in renames and d_field in renames


def _in_substruct(item: Json, name: str) -> bool:
    desc = item.get("Description")
    if not isinstance(desc, Mapping) or not desc.get("Fields"):
        return False
    return _fields_match(str(desc.get("name", "")), str(desc["Fields"][0].get("field")), name)


def _size_total(item: Json) -> int:
    return int(item.get("size", 0)) * int(item.get("num", 1))
