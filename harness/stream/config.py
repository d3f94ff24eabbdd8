"""Decoder for the CONFIGURATION record: machine type, page bits, capabilities, UUID.

Its layout is ``vmstate_configuration`` (savevm.c): be32 length, the machine
type name, then optional subsections ``configuration/target-page-bits`` (be32),
``configuration/capabilities`` (be32 count, then u8-length names of the
capabilities the destination must match, e.g. ``x-ignore-shared``) and
``configuration/uuid`` (16 bytes). Newer QEMU (10.0 here, not 7.2) describes
it in the vmdesc; for older streams the layout is known here. Machines that
predate it (pseries-2.3 and older, hw_compat_2_3 ``send-configuration=off``)
omit the record.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.stream.device import decode_struct
from harness.stream.format import RecordType
from harness.stream.reader import StreamReader
from harness.stream.values import StructValue
from harness.stream.vmdesc import StructDesc

_MAX_NAME = 4096
_PREFIX = "configuration/"


@dataclass(frozen=True, slots=True)
class ConfigurationInfo:
    """What the configuration record said."""

    machine: str
    target_page_bits: int | None
    capabilities: tuple[str, ...]
    uuid: bytes | None
    state: StructValue | None  # the vmdesc-decoded state, when the vmdesc describes it


def read_configuration(r: StreamReader, desc: StructDesc | None) -> ConfigurationInfo:
    """Read the record body (after its 0x07 byte)."""
    if desc is not None:
        return _from_state(decode_struct(r, desc))
    length = r.u32()
    if length > _MAX_NAME:
        raise r.error(f"machine type name of {length} bytes")
    machine = r.take(length).decode("ascii", "replace")
    page_bits: int | None = None
    caps: list[str] = []
    uuid: bytes | None = None
    while r.peek_u8() == RecordType.SUBSECTION:
        here = r.tell()
        r.u8()
        name = r.take(r.u8()).decode("ascii", "replace")
        r.u32()  # version 1
        if name == f"{_PREFIX}target-page-bits":
            page_bits = r.u32()
        elif name == f"{_PREFIX}capabilities":
            count = r.u32()
            caps = [r.take(r.u8()).decode("ascii", "replace") for _ in range(min(count, 256))]
            if count > 256:
                raise r.error(f"{count} migration capabilities in the configuration", here)
        elif name == f"{_PREFIX}uuid":
            uuid = r.take(16)
        else:
            raise r.error(f"configuration subsection {name!r} unknown and not in a vmdesc", here)
    return ConfigurationInfo(machine, page_bits, tuple(caps), uuid, None)


def _from_state(state: StructValue) -> ConfigurationInfo:
    name = state.find("name")
    machine = name.value if name is not None and isinstance(name.value, bytes) else b""
    page_bits: int | None = None
    caps: tuple[str, ...] = ()
    uuid: bytes | None = None
    for sub in state.subsections:
        if sub.name == f"{_PREFIX}target-page-bits":
            bits = sub.state.values("target_page_bits")
            page_bits = bits[0] if bits and isinstance(bits[0], int) else None
        elif sub.name == f"{_PREFIX}capabilities":
            caps = tuple(v for v in sub.state.values("capabilities") if isinstance(v, str))
        elif sub.name == f"{_PREFIX}uuid":
            uuid = b"".join(
                bytes([v]) if isinstance(v, int) else v
                for v in sub.state.values("uuid.data")
                if isinstance(v, int | bytes)
            )
    return ConfigurationInfo(machine.decode("ascii", "replace"), page_bits, caps, uuid, state)
