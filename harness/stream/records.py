"""What the parser yields: one frozen record per thing found in the stream, in order."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.stream.config import ConfigurationInfo
from harness.stream.htab import HtabPiece
from harness.stream.ram import RamPiece
from harness.stream.values import StructValue
from harness.stream.vmdesc import VmDesc


class SectionKind(enum.Enum):
    START = "start"
    PART = "part"
    END = "end"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class SectionInfo:
    """A section as its START/FULL header announced it (PART/END refer to it by id)."""

    section_id: int
    idstr: str
    instance_id: int  # unsigned: spapr uses 0x80000000+ for some devices
    version_id: int

    def describe(self) -> str:
        return f"section {self.section_id} {self.idstr!r} instance 0x{self.instance_id:x}"


@dataclass(frozen=True, slots=True)
class Header:
    offset: int
    version: int


@dataclass(frozen=True, slots=True)
class Configuration:
    offset: int
    info: ConfigurationInfo


@dataclass(frozen=True, slots=True)
class SectionHeader:
    offset: int
    kind: SectionKind
    section: SectionInfo


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A FULL section decoded with its vmdesc entry."""

    offset: int
    end: int
    section: SectionInfo
    state: StructValue


@dataclass(frozen=True, slots=True)
class RamData:
    offset: int
    end: int
    section: SectionInfo
    piece: RamPiece


@dataclass(frozen=True, slots=True)
class HtabData:
    offset: int
    end: int
    section: SectionInfo
    piece: HtabPiece


@dataclass(frozen=True, slots=True)
class Undecoded:
    """A section body passed over: no decoder and no vmdesc entry for it; says why."""

    offset: int
    end: int
    section: SectionInfo
    reason: str


@dataclass(frozen=True, slots=True)
class Footer:
    """A section footer (0x7e, be32 section id) that matched its section."""

    offset: int
    section_id: int


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A QEMU_VM_COMMAND; ``value`` is PING's value or PACKAGED's length."""

    offset: int
    command: int
    name: str
    length: int
    value: int | None = None


@dataclass(frozen=True, slots=True)
class Eof:
    offset: int


@dataclass(frozen=True, slots=True)
class VmDescription:
    offset: int
    length: int
    vmdesc: VmDesc


Record = (
    Header | Configuration | SectionHeader | DeviceState | RamData | HtabData | Undecoded
    | Footer | CommandRecord | Eof | VmDescription
)
