"""Decoded device state: a tree of fields and subsections, as the vmdesc names them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from harness.stream.vmdesc import StructDesc


@dataclass(frozen=True, slots=True)
class NullPtr:
    """A NULL entry in an array of pointers, sent as the byte ``'0'`` (vmstate_info_nullptr)."""


@dataclass(frozen=True, slots=True)
class Elided:
    """A buffer too large to keep in memory: only its size is known."""

    size: int


@dataclass(frozen=True, slots=True)
class IntArray:
    """A compressed array of integers (vmdesc ``array_len``), kept as its raw bytes.

    Decoded on demand: a TCE table is 262144 of these, and most readers only
    compare or count them.
    """

    width: int
    signed: bool
    data: bytes

    def __len__(self) -> int:
        return len(self.data) // self.width

    def __getitem__(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return int.from_bytes(self.data[i * self.width : (i + 1) * self.width], "big",
                              signed=self.signed)

    def tolist(self) -> list[int]:
        w = self.width
        return [int.from_bytes(self.data[i : i + w], "big", signed=self.signed)
                for i in range(0, len(self.data), w)]


@dataclass(frozen=True, slots=True)
class StructArray:
    """A compressed array of flat structs (fixed-width fields only), kept as raw bytes.

    ``items()`` decodes the elements into :class:`StructValue` on demand; the
    interrupt source tables (ics, xive) are thousands of these.
    """

    desc: StructDesc
    offset: int
    count: int
    data: bytes

    def __len__(self) -> int:
        return self.count

    def items(self) -> tuple[StructValue, ...]:
        return tuple(self._element(i) for i in range(self.count))

    def _element(self, i: int) -> StructValue:
        size = len(self.data) // self.count
        at = i * size
        fields = []
        for f in self.desc.fields:
            for n in range(f.count):
                raw = self.data[at : at + f.size]
                value: Value
                if f.type == "bool":
                    value = raw[0] != 0
                elif f.type in FLAT_INT_TYPES:
                    value = int.from_bytes(raw, "big", signed=FLAT_INT_TYPES[f.type])
                else:
                    value = raw
                index = n if f.count > 1 else f.index
                fields.append(Field(f.name, f.type, self.offset + at, f.size, value, index))
                at += f.size
        return StructValue(self.desc.vmsd_name, self.desc.version, tuple(fields))


# Integer types of flat structs and whether they are signed (vmstate-types.c).
FLAT_INT_TYPES: dict[str, bool] = {
    "int8": True, "int16": True, "int32": True, "int64": True, "int32 equal": True,
    "int32 le": True, "int64 equal": True, "uint8": False, "uint16": False, "uint32": False,
    "uint64": False, "uint8 equal": False, "uint16 equal": False, "uint32 equal": False,
}


Value: TypeAlias = (
    "int | float | bool | bytes | str | NullPtr | Elided | IntArray | StructArray | StructValue"
)


@dataclass(frozen=True, slots=True)
class Field:
    """One field element as read: vmdesc name and type, where it was, what it held.

    Array elements are separate fields with the same name and an ``index``
    (the way the vmdesc lists them, and analyze-migration.py shows them),
    except compressed arrays of integers: one field, an :class:`IntArray`.
    """

    name: str
    type: str
    offset: int
    size: int
    value: Value
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Subsection:
    """A subsection that was present in the stream (``0x05``, name, be32 version, state)."""

    name: str
    version: int
    offset: int
    state: StructValue


@dataclass(frozen=True, slots=True)
class StructValue:
    """The fields and subsections of one VMStateDescription instance."""

    vmsd_name: str
    version: int
    fields: tuple[Field, ...]
    subsections: tuple[Subsection, ...] = ()

    def find(self, name: str) -> Field | None:
        """The first field called ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def values(self, name: str) -> list[Value]:
        """Every element of the field called ``name``, in stream order."""
        return [f.value for f in self.fields if f.name == name]

    def subsection(self, name: str) -> Subsection | None:
        for sub in self.subsections:
            if sub.name == name:
                return sub
        return None
