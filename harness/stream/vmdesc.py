"""The VMDESCRIPTION trailer: where it is, and a validated model of it.

QEMU writes the description of every device section it sent *after* the
stream's EOF byte: ``0x06, be32 length, JSON`` (savevm.c,
``qemu_savevm_state_complete_precopy_non_iterable``). The JSON is built by
``vmstate_save_state_v`` and ``vmsd_desc_field_start/end`` (vmstate.c): per
device ``name``, ``instance_id``, ``vmsd_name``, ``version``, ``fields`` and
the ``subsections`` actually sent; per field ``name``, ``type``, ``size``
(bytes written for one element), ``array_len`` (a compressed array: that many
elements like the first) or ``index``, and ``struct`` for nested structs. A
``vstruct`` field carries its struct's keys inline. Old-style devices
(``save_state`` handlers) appear as a single ``data`` buffer. Machines with
``suppress_vmdesc`` (pseries-2.2 and older) send no trailer at all.

Because the trailer comes last, the parser finds it first by looking back
from the end of the file: the JSON writer escapes control characters, so the
last 0x06 bytes of the file can only be the marker or its length field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.stream.format import RecordType
from harness.stream.reader import StreamReader

MAX_VMDESC_BYTES = 64 << 20
# Deepest bracket nesting accepted; QEMU's pseries descriptions nest 10 (5.2 to 10.0).
# Checked before decoding, so that the recursion of json.loads and of the
# decoders below never meets Python's recursion limit, whose distance
# depends on the caller's stack (the same stream would fail differently
# depending on who parses it).
MAX_JSON_DEPTH = 200
_TAIL_STEP = 1 << 20
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"{}[]")))


class VmDescError(ValueError):
    """The vmdesc JSON does not have the shape QEMU writes."""


@dataclass(frozen=True, slots=True)
class StructDesc:
    """One VMStateDescription as sent: its fields and the subsections that followed."""

    vmsd_name: str
    version: int
    fields: tuple[FieldDesc, ...]
    subsections: tuple[StructDesc, ...]


@dataclass(frozen=True, slots=True)
class FieldDesc:
    """One field entry; ``count`` elements of ``size`` bytes each (compressed arrays)."""

    name: str
    type: str
    size: int
    count: int = 1
    index: int | None = None
    struct: StructDesc | None = None

    @property
    def is_array(self) -> bool:
        return self.count > 1 or self.index is not None


@dataclass(frozen=True, slots=True)
class DeviceDesc:
    """The description of one FULL device section, keyed like the section header."""

    name: str
    instance_id: int
    state: StructDesc
    old_style: bool = False


@dataclass(frozen=True)
class VmDesc:
    """The whole trailer: target page size, configuration, and every device sent."""

    page_size: int
    configuration: StructDesc | None
    devices: tuple[DeviceDesc, ...]
    offset: int = 0
    length: int = 0
    raw: bytes = field(default=b"", compare=False, repr=False)  # the JSON text as sent
    _by_key: Mapping[tuple[str, int], DeviceDesc] = field(
        default_factory=dict, compare=False, repr=False
    )

    def device(self, name: str, instance_id: int) -> DeviceDesc | None:
        return self._by_key.get((name, instance_id))


@dataclass(frozen=True, slots=True)
class VmDescLocation:
    """Where the trailer is: offset of the 0x06 marker, and the JSON's length."""

    offset: int
    length: int

    @property
    def json_offset(self) -> int:
        return self.offset + 5


def locate(reader: StreamReader) -> VmDescLocation | None:
    """Find the trailer by looking back from the end; None if the stream has none.

    A trailer is ``0x00`` (EOF), ``0x06``, be32 length, then exactly ``length``
    bytes of JSON starting with ``{`` up to the end of the file. The JSON has
    no 0x06 byte, so only the last five 0x06 bytes of the file can be the
    marker (the others would sit in its length field).
    """
    marker = bytes([RecordType.VMDESCRIPTION])
    end = reader.size
    tried = 0
    while end > 0 and reader.size - end < MAX_VMDESC_BYTES + 5:
        start = max(0, end - _TAIL_STEP)
        chunk = reader.peek_at(start, end - start)
        at = chunk.rfind(marker)
        while at >= 0:
            if _is_trailer(reader, start + at):
                return VmDescLocation(start + at, reader.size - start - at - 5)
            tried += 1
            if tried == 5:
                return None
            at = chunk.rfind(marker, 0, at)
        end = start
    return None


def _is_trailer(reader: StreamReader, at: int) -> bool:
    if at < 1:
        return False
    head = reader.peek_at(at - 1, 7)
    if len(head) < 7 or head[0] != RecordType.EOF or head[6:7] != b"{":
        return False
    length = int.from_bytes(head[2:6], "big")
    return at + 5 + length == reader.size


def load(reader: StreamReader, where: VmDescLocation) -> VmDesc:
    """Read and validate the trailer at ``where`` (raises :class:`VmDescError`)."""
    raw = reader.peek_at(where.json_offset, where.length)
    if _too_deep(raw):
        raise VmDescError(f"brackets nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VmDescError(f"not JSON: {exc}") from exc
    return parse(data, where.offset, where.length, raw)


def _too_deep(raw: bytes) -> bool:
    """Whether a JSON decoder could go deeper than MAX_JSON_DEPTH brackets into ``raw``.

    Keeps only the brackets outside strings, then removes innermost pairs, one
    level per pass (C-speed replaces); the depth is at most the passes plus
    the openers left unclosed.
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(_AS_SQUARE, _NOT_BRACKETS)
    passes = 0
    while b"[]" in brackets and passes <= MAX_JSON_DEPTH:
        brackets = brackets.replace(b"[]", b"")
        passes += 1
    return passes + brackets.count(b"[") > MAX_JSON_DEPTH


def parse(data: object, offset: int = 0, length: int = 0, raw: bytes = b"") -> VmDesc:
    """Build the model from decoded JSON, checking every key the decoder relies on."""
    top = _obj(data, "vmdesc")
    page_size = _int(top.get("page_size"), "page_size")
    if page_size <= 0 or page_size & (page_size - 1):
        raise VmDescError(f"page_size {page_size} is not a power of two")
    config = top.get("configuration")
    configuration = _struct(_obj(config, "configuration"), "configuration") if config else None
    devices = []
    for i, item in enumerate(_list(top.get("devices", []), "devices")):
        dev = _obj(item, f"devices[{i}]")
        where = f"devices[{i}] ({dev.get('name')!r})"
        old_style = "vmsd_name" not in dev
        devices.append(
            DeviceDesc(
                name=_str(dev.get("name"), f"{where}.name"),
                instance_id=_int(dev.get("instance_id"), f"{where}.instance_id") & 0xFFFFFFFF,
                state=_struct(dev, where),
                old_style=old_style,
            )
        )
    by_key = {(d.name, d.instance_id): d for d in devices}
    return VmDesc(page_size, configuration, tuple(devices), offset, length, raw, by_key)


def _struct(obj: Mapping[str, Any], where: str) -> StructDesc:
    fields = tuple(
        _field(_obj(f, f"{where}.fields[{i}]"), f"{where}.fields[{i}]")
        for i, f in enumerate(_list(obj.get("fields", []), f"{where}.fields"))
    )
    subsections = tuple(
        _struct(_obj(s, f"{where}.subsections[{i}]"), f"{where}.subsections[{i}]")
        for i, s in enumerate(_list(obj.get("subsections", []), f"{where}.subsections"))
    )
    version = obj.get("version", 0)
    return StructDesc(
        vmsd_name=_str(obj.get("vmsd_name", ""), f"{where}.vmsd_name"),
        version=_int(version, f"{where}.version"),
        fields=fields,
        subsections=subsections,
    )


def _field(obj: Mapping[str, Any], where: str) -> FieldDesc:
    name = _str(obj.get("name"), f"{where}.name")
    type_ = _str(obj.get("type"), f"{where}.type")
    size = _int(obj.get("size"), f"{where}.size")
    if size < 0:
        raise VmDescError(f"{where}: negative size {size}")
    count = _int(obj.get("array_len", 1), f"{where}.array_len")
    if count < 1:
        raise VmDescError(f"{where}: array_len {count} < 1")
    index = obj.get("index")
    struct = None
    if "struct" in obj:
        struct = _struct(_obj(obj["struct"], f"{where}.struct"), f"{where}.struct")
    elif "fields" in obj:  # vstruct: the struct's own keys are inline
        struct = _struct(obj, where)
    return FieldDesc(
        name=name,
        type=type_,
        size=size,
        count=count,
        index=None if index is None else _int(index, f"{where}.index"),
        struct=struct,
    )


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise VmDescError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise VmDescError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise VmDescError(f"{where}: expected an integer, got {value!r}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise VmDescError(f"{where}: expected a string, got {value!r}")
    return value
