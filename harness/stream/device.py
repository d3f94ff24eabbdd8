"""Decode a device section with its vmdesc description.

Mirrors QEMU's writer (vmstate.c ``vmstate_save_state_v``): the fields in
order, each ``count`` times for a compressed array, structs recursively, then
the subsections that were sent (``0x05``, u8 name length, name, be32 version,
their state; ``vmstate_subsection_save``). Integer types are big-endian with
the width the vmdesc gives (vmstate-types.c); ``int32 le`` means "less or
equal" (a check on load), not little-endian. Every element's consumed length
is checked against the vmdesc ``size``, so a stream that disagrees with its
own description is reported where it starts to disagree.
"""

from __future__ import annotations

import struct

from harness.stream.format import RecordType
from harness.stream.reader import StreamReader
from harness.stream.values import (
    FLAT_INT_TYPES,
    Elided,
    Field,
    IntArray,
    NullPtr,
    StructArray,
    StructValue,
    Subsection,
    Value,
)
from harness.stream.vmdesc import FieldDesc, StructDesc

# Buffers larger than this are skipped (kept as Elided) to bound memory.
MAX_KEPT_BYTES = 4 << 20

SIGNED_INTS = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "int32 equal": 4,
               "int32 le": 4, "int64 equal": 8}
UNSIGNED_INTS = {"uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "uint8 equal": 1,
                 "uint16 equal": 2, "uint32 equal": 4, "timer": 8}

# Field types whose value the destination compares with its own on load
# (vmstate-types.c get_*_equal, get_int32_le): a difference fails migration.
EQUAL_CHECKED = frozenset({"int32 equal", "uint32 equal", "int64 equal", "uint8 equal",
                           "uint16 equal"})
LE_CHECKED = frozenset({"int32 le"})

_MAX_EMPTY_ELEMENTS = 1 << 16
_NULLPTR_MARKER = 0x30  # '0', vmstate-types.c put_nullptr
_F64 = struct.Struct(">d")


_INT_FORMATS = {
    (width, signed): struct.Struct(">" + "bhiq"[width.bit_length() - 1]
                                   if signed else ">" + "BHIQ"[width.bit_length() - 1])
    for width in (1, 2, 4, 8)
    for signed in (False, True)
}


def decode_struct(r: StreamReader, desc: StructDesc, version: int | None = None) -> StructValue:
    """Read the fields and subsections ``desc`` describes, from the reader's position."""
    fields: list[Field] = []
    for fdesc in desc.fields:
        if fdesc.count > 1:
            _check_array(r, fdesc)
            width = SIGNED_INTS.get(fdesc.type) or UNSIGNED_INTS.get(fdesc.type)
            if width == fdesc.size:
                fields.append(_decode_int_array(r, fdesc, width))
                continue
            if fdesc.struct is not None and _flat_size(fdesc.struct) == fdesc.size > 0:
                fields.append(_decode_struct_array(r, fdesc, fdesc.struct))
                continue
            for i in range(fdesc.count):
                fields.append(_decode_field(r, fdesc, i, check_size=i == 0))
        else:
            fields.append(_decode_field(r, fdesc, fdesc.index, check_size=True))
    subsections = tuple(_decode_subsection(r, sub) for sub in desc.subsections)
    return StructValue(
        desc.vmsd_name, desc.version if version is None else version, tuple(fields), subsections
    )


def _decode_int_array(r: StreamReader, fdesc: FieldDesc, width: int) -> Field:
    offset = r.tell()
    total = width * fdesc.count
    value: Value
    if total > MAX_KEPT_BYTES:
        r.skip(total)
        value = Elided(total)
    else:
        value = IntArray(width, fdesc.type in SIGNED_INTS, r.take(total))
    return Field(fdesc.name, fdesc.type, offset, total, value, 0)


def _check_array(r: StreamReader, fdesc: FieldDesc) -> None:
    """Refuse arrays the rest of the stream cannot hold (a corrupt vmdesc must not hang us)."""
    if fdesc.size * fdesc.count > r.remaining():
        raise r.error(
            f"field {fdesc.name!r}: {fdesc.count} elements of {fdesc.size} bytes exceed the "
            f"{r.remaining()} bytes left"
        )
    if fdesc.size == 0 and fdesc.count > _MAX_EMPTY_ELEMENTS:
        raise r.error(f"field {fdesc.name!r}: {fdesc.count} elements of 0 bytes")


def _flat_size(desc: StructDesc) -> int | None:
    """Bytes of one element if every field has a fixed width (ints, bools), else None."""
    if desc.subsections:
        return None
    total = 0
    for f in desc.fields:
        if f.type in FLAT_INT_TYPES and (SIGNED_INTS.get(f.type) or UNSIGNED_INTS.get(f.type)) == f.size:
            total += f.size * f.count
        elif f.type == "bool" and f.size == 1:
            total += f.count
        else:
            return None
    return total


def _decode_struct_array(r: StreamReader, fdesc: FieldDesc, desc: StructDesc) -> Field:
    offset = r.tell()
    total = fdesc.size * fdesc.count
    value: Value
    if total > MAX_KEPT_BYTES:
        r.skip(total)
        value = Elided(total)
    else:
        value = StructArray(desc, offset, fdesc.count, r.take(total))
    return Field(fdesc.name, fdesc.type, offset, total, value, 0)


def _decode_field(r: StreamReader, fdesc: FieldDesc, index: int | None, check_size: bool) -> Field:
    offset = r.base + r.pos
    size = fdesc.size
    type_ = fdesc.type
    value: Value
    width = SIGNED_INTS.get(type_)
    signed = width is not None
    if width is None:
        width = UNSIGNED_INTS.get(type_)
    if width == size:
        if r.pos + size > r.limit:
            r.need(size)
        (value,) = _INT_FORMATS[size, signed].unpack_from(r.buf, r.pos)
        r.pos += size
        return Field(fdesc.name, type_, offset, size, value, index)
    if fdesc.struct is not None and type_ in ("struct", "vstruct"):
        value = decode_struct(r, fdesc.struct)
        used = r.tell() - offset
        if check_size and used != size:
            raise r.error(
                f"field {fdesc.name!r}: vmdesc says {size} bytes, its struct "
                f"{fdesc.struct.vmsd_name!r} took {used}",
                offset=offset,
            )
        return Field(fdesc.name, type_, offset, used, value, index)
    if type_ == "bool" and size == 1:
        value = r.u8() != 0
    elif type_ == "float64" and size == 8:
        (value,) = _F64.unpack(r.take(8))
    elif type_ == "nullptr" and size == 1:
        marker = r.u8()
        if marker != _NULLPTR_MARKER:
            raise r.error(f"field {fdesc.name!r}: nullptr marker 0x{marker:02x}, not '0'", offset)
        value = NullPtr()
    elif type_ == "capability":
        length = r.u8()
        value = r.take(length).decode("ascii", "replace")
        size = length + 1
    elif size > MAX_KEPT_BYTES:
        r.skip(size)
        value = Elided(size)
    else:
        value = r.take(size)
    return Field(fdesc.name, type_, offset, size, value, index)


def _decode_subsection(r: StreamReader, desc: StructDesc) -> Subsection:
    offset = r.tell()
    marker = r.u8()
    if marker != RecordType.SUBSECTION:
        raise r.error(
            f"expected subsection {desc.vmsd_name!r} (byte 0x05), found 0x{marker:02x}", offset
        )
    name = r.take(r.u8()).decode("ascii", "replace")
    version = r.u32()
    if name != desc.vmsd_name:
        raise r.error(f"subsection {name!r} where the vmdesc lists {desc.vmsd_name!r}", offset)
    if version != desc.version:
        raise r.error(
            f"subsection {name!r} version {version}, vmdesc says {desc.version}", offset
        )
    return Subsection(name, version, offset, decode_struct(r, desc))
