"""``kind: host``: the host's own ``qemu-system-ppc64`` (Debian package qemu-system-ppc), on
this machine or on a lab host."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.debian import package_version
from harness.builds.lab import lab_package_version, require_on_lab_host
from harness.builds.model import Build
from harness.errors import BuildError

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost
    from harness.matrix.reader import Reader


@dataclass(frozen=True)
class HostPackageBuild:
    kind: ClassVar[str] = "host"
    name: str
    binary: str = "/usr/bin/qemu-system-ppc64"

    @classmethod
    def from_matrix(cls, name: str, entry: Reader) -> HostPackageBuild:
        entry.only("kind", "binary")
        return cls(name, entry.get("binary", str, "/usr/bin/qemu-system-ppc64"))

    def provision(self) -> Build:
        if not os.access(self.binary, os.X_OK):
            raise BuildError(
                f"build {self.name!r}: {self.binary} is missing; install Debian's "
                "qemu-system-ppc package (`make setup` does)."
            )
        return Build(self.name, Path("/"), self.binary, package=package_version(Path("/")))

    def on_lab_host(self, host: SshHost) -> Build:
        require_on_lab_host(host, self.name, "-x", self.binary, "install the qemu-system-ppc package "
                            "on it, or set `binary:` to where its qemu-system-ppc64 is")
        return Build(self.name, Path("/"), self.binary, package=lab_package_version(host))

    def lab_refusal(self) -> str | None:
        return None

    def nested_refusal(self) -> str | None:
        return None  # the host's own QEMU is bookworm's, which the nested image carries for ppc64el
