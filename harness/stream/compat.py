"""Our records in the shape of ``analyze-migration.py -d state`` output, to compare with it.

analyze-migration.py (QEMU scripts/) keys each section ``"<idstr> (<section
id>)"``; ``ram`` becomes ``{"section sizes": {block: "0x%016x"}}``,
``spapr/htab`` an empty string; a device section a dict of field name to
value, where a name seen twice (array elements) becomes a list. Integers are
``"0x%0*x"`` strings of the field's width, with ``" (-n)"`` appended when a
signed reading is negative; it reads ``uint8 equal`` and ``uint16 equal`` as
signed. Booleans stay booleans; every other type is its bytes as
space-separated hex; a NULL pointer is ``"nullptr"``. Subsections are keys
of their parent, named after the subsection. The configuration record is not
shown.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from harness.stream.device import SIGNED_INTS, UNSIGNED_INTS
from harness.stream.records import DeviceState, HtabData, RamData, Record, SectionHeader
from harness.stream.values import Elided, Field, IntArray, NullPtr, StructArray, StructValue

# Types analyze-migration.py reads as signed integers (its vmsd_field_readers).
ANALYZE_SIGNED = frozenset(SIGNED_INTS) | {"uint8 equal", "uint16 equal"}
ANALYZE_INTS = frozenset(SIGNED_INTS) | (frozenset(UNSIGNED_INTS) - {"timer"})

RawReader = Callable[[int, int], bytes]


class Unrepresentable:
    """Stands for a value analyze shows but we did not keep (an :class:`Elided` buffer)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<elided>"


def analyze_state(records: Iterable[Record], raw: RawReader | None = None) -> dict[str, Any]:
    """The ``-d state`` dict for a stream's records (``raw`` re-reads vstruct bytes)."""
    out: dict[str, Any] = {}
    names: dict[int, str] = {}
    for rec in records:
        if isinstance(rec, SectionHeader) and rec.section.section_id not in names:
            key = f"{rec.section.idstr} ({rec.section.section_id})"
            names[rec.section.section_id] = key
        elif isinstance(rec, RamData):
            sizes = out.setdefault(names[rec.section.section_id], {"section sizes": {}})
            for block in rec.piece.blocks:
                sizes["section sizes"][block.name] = f"0x{block.size:016x}"
        elif isinstance(rec, HtabData):
            out[names[rec.section.section_id]] = ""
        elif isinstance(rec, DeviceState):
            out[names[rec.section.section_id]] = _struct(rec.state, raw)
    return out


def _struct(state: StructValue, raw: RawReader | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    lists: set[str] = set()  # names that became lists (seen twice, or an array)
    for f in state.fields:
        values = _field_values(f, raw)
        if f.name in lists:
            data[f.name].extend(values)
        elif f.name in data or isinstance(f.value, IntArray | StructArray):
            data[f.name] = ([data[f.name]] if f.name in data else []) + values
            lists.add(f.name)
        else:
            data[f.name] = values[0]
    for sub in state.subsections:
        data[sub.name] = _struct(sub.state, raw)
    return data


def _field_values(f: Field, raw: RawReader | None) -> list[Any]:
    v = f.value
    if isinstance(v, IntArray):
        return [_int_text(x, v.width, f.type) for x in v.tolist()]
    if isinstance(v, StructArray):
        return [_struct(item, raw) for item in v.items()]
    if isinstance(v, StructValue):
        if f.type == "vstruct":
            return [_hex(raw(f.offset, f.size)) if raw else Unrepresentable()]
        return [_struct(v, raw)]
    if isinstance(v, bool):
        return [v]
    if isinstance(v, NullPtr):
        return ["nullptr"]
    if isinstance(v, Elided):
        return [Unrepresentable()]
    if isinstance(v, str):
        return [v]
    if isinstance(v, float):
        return [_hex(struct.pack(">d", v))]
    if isinstance(v, int):
        if f.type in ANALYZE_INTS:
            return [_int_text(v, f.size, f.type)]
        return [_hex(v.to_bytes(f.size, "big", signed=v < 0))]
    return [_hex(v)]


def _int_text(value: int, width: int, type_: str) -> str:
    unsigned = value & ((1 << (8 * width)) - 1)
    text = f"0x{unsigned:0{2 * width}x}"
    if type_ in ANALYZE_SIGNED:
        signed = unsigned - (1 << (8 * width)) if unsigned >> (8 * width - 1) else unsigned
        if signed < 0:
            text += f" ({signed})"
    return text


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)
