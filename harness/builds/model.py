"""A provisioned build (where its QEMU lives) and what introspection found in it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Build:
    """A runnable QEMU: its binary inside ``root`` ("/" unless it has a root of its own)."""

    name: str
    root: Path
    binary: str
    firmware_dir: str | None = None
    package: str | None = None
    own_dirs: tuple[Path, ...] = ()
    """Directories of this machine outside /usr that the build reads (a path build's tree,
    firmware, libraries): every view of this machine it runs in must show them."""

    @property
    def has_own_root(self) -> bool:
        return self.root != Path("/")


@dataclass(frozen=True)
class MachineInfo:
    """One machine type as the build reports it."""

    name: str
    alias: str | None
    deprecated: bool
    properties: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class BuildInfo:
    """What a build supports, from ``-version`` and QMP (cached by build identity)."""

    version: str
    package: str | None
    machines: dict[str, MachineInfo]
    cpu_cores: tuple[str, ...]

    def machine(self, name: str) -> MachineInfo | None:
        """A machine type by name or alias (``pseries`` is the alias of the newest)."""
        if name in self.machines:
            return self.machines[name]
        for info in self.machines.values():
            if info.alias == name:
                return info
        return None

    def pseries_versions(self) -> list[str]:
        """Versioned pseries machine types (``pseries-X.Y``, not variants like -sxxm), oldest first."""
        versioned = {n: m for n in self.machines if (m := _VERSIONED.match(n))}
        return sorted(versioned, key=lambda n: (int(versioned[n][1]), int(versioned[n][2])))


_VERSIONED = re.compile(r"^pseries-(\d+)\.(\d+)$")
