"""Validated build specifications, as declared in matrix.yaml (data only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostPackageBuild:
    """The host's own ``qemu-system-ppc64`` (Debian package qemu-system-ppc)."""

    name: str
    binary: str = "/usr/bin/qemu-system-ppc64"


@dataclass(frozen=True)
class DebianSuiteBuild:
    """QEMU from a Debian suite, run from a debootstrap root filesystem."""

    name: str
    suite: str
    mirror: str = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class PathBuild:
    """A developer's own build: a binary and the firmware directory it needs."""

    name: str
    binary: Path
    firmware: Path


BuildSpec = HostPackageBuild | DebianSuiteBuild | PathBuild
