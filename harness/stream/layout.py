"""The shape of a device section (from its vmdesc) and the values QEMU checks on load.

A layout is the flattened field list of a section's description: one entry
per field, struct members as ``outer.inner``, subsection members as
``subsection:field``. Two streams whose layouts differ at the same section
version do not speak the same wire format. Checked values are the fields of
the "equal" types (and ``int32 le``) the destination compares with its own
value on load (vmstate-types.c ``get_*_equal``, ``get_int32_le``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.stream.device import EQUAL_CHECKED, LE_CHECKED
from harness.stream.values import Elided, IntArray, StructArray, StructValue, Value
from harness.stream.vmdesc import StructDesc

CHECKED_TYPES = EQUAL_CHECKED | LE_CHECKED


@dataclass(frozen=True, slots=True)
class LayoutEntry:
    path: str
    type: str
    size: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class SubsectionEntry:
    """A subsection present in the stream; ``path`` locates nested ones (``field/name``)."""

    path: str
    name: str
    version: int


@dataclass(frozen=True, slots=True)
class CheckedValue:
    path: str
    type: str
    value: int | tuple[int, ...]


def layout(desc: StructDesc, prefix: str = "") -> tuple[LayoutEntry, ...]:
    """Flattened fields of ``desc`` (struct members included, subsections prefixed)."""
    out: list[LayoutEntry] = []
    for f in desc.fields:
        path = prefix + f.name + (f"[{f.index}]" if f.index is not None else "")
        out.append(LayoutEntry(path, f.type, f.size, f.count))
        if f.struct is not None:
            out.extend(layout(f.struct, path + "."))
    for sub in desc.subsections:
        out.extend(layout(sub, f"{prefix}{sub.vmsd_name}:"))
    return tuple(out)


def subsections(state: StructValue, prefix: str = "") -> tuple[SubsectionEntry, ...]:
    """Every subsection in ``state``, nested ones included."""
    out: list[SubsectionEntry] = []
    for f in state.fields:
        if isinstance(f.value, StructValue):
            out.extend(subsections(f.value, f"{prefix}{f.name}/"))
    for sub in state.subsections:
        out.append(SubsectionEntry(prefix.rstrip("/"), sub.name, sub.version))
        out.extend(subsections(sub.state, f"{prefix}{sub.name}/"))
    return tuple(out)


def checked_values(state: StructValue, prefix: str = "") -> tuple[CheckedValue, ...]:
    """Values of the fields the destination checks on load, by path."""
    out: list[CheckedValue] = []
    for f in state.fields:
        array = isinstance(f.value, IntArray | StructArray)
        path = prefix + f.name + (f"[{f.index}]" if f.index is not None and not array else "")
        if isinstance(f.value, StructValue):
            out.extend(checked_values(f.value, path + "."))
        elif isinstance(f.value, StructArray):
            if any(e.type in CHECKED_TYPES for e in f.value.desc.fields):
                for i, item in enumerate(f.value.items()):
                    out.extend(checked_values(item, f"{path}[{i}]."))
        elif f.type in CHECKED_TYPES:
            value = _int_value(f.value)
            if value is not None:
                out.append(CheckedValue(path, f.type, value))
    for sub in state.subsections:
        out.extend(checked_values(sub.state, f"{prefix}{sub.name}:"))
    return tuple(out)


def _int_value(value: Value) -> int | tuple[int, ...] | None:
    if isinstance(value, IntArray):
        return tuple(value.tolist())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Elided):
        return None
    return None
