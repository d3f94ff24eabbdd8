"""``kind: path``: a developer's own build, a binary and the firmware directory it needs, on
this machine or installed at that path on the lab hosts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.lab import require_on_lab_host
from harness.builds.model import Build
from harness.builds.nested_host import NESTED_WHY
from harness.builds.tree import own_dirs
from harness.errors import BuildError

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost
    from harness.matrix.reader import Reader

_OWN_FILES = "runs a path build from its own filesystem, which cannot see this machine's"


@dataclass(frozen=True)
class PathBuild:
    kind: ClassVar[str] = "path"
    name: str
    binary: Path
    firmware: Path

    @classmethod
    def from_matrix(cls, name: str, entry: Reader) -> PathBuild:
        entry.only("kind", "binary", "firmware")
        return cls(name, Path(entry.get("binary", str, required=True)),
                   Path(entry.get("firmware", str, required=True)))

    def provision(self) -> Build:
        binary, firmware = _real(self.binary), _real(self.firmware)
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise BuildError(
                f"build {self.name!r}: binary {self.binary} does not exist or is not an "
                "executable file; fix `binary:` in matrix.yaml (goldmig patch: --candidate) "
                "to point at your build tree's qemu-system-ppc64."
            )
        if not firmware.is_dir():
            raise BuildError(
                f"build {self.name!r}: firmware directory {self.firmware} does not exist; "
                "fix `firmware:` in matrix.yaml (goldmig patch: --firmware): a QEMU build "
                "tree's pc-bios directory."
            )
        return Build(self.name, Path("/"), str(binary), firmware_dir=str(firmware),
                     own_dirs=own_dirs(binary, firmware))

    def on_lab_host(self, host: SshHost) -> Build:
        require_on_lab_host(host, self.name, "-x", str(self.binary), f"a lab host {_OWN_FILES}; "
                            "install the build there at that path, or fix `binary:` in matrix.yaml "
                            "(goldmig patch: --candidate)")
        require_on_lab_host(host, self.name, "-d", str(self.firmware), f"a lab host {_OWN_FILES}; fix "
                            "`firmware:` in matrix.yaml (goldmig patch: --firmware): the build "
                            "tree's pc-bios directory on the lab host")
        return Build(self.name, Path("/"), str(self.binary), firmware_dir=str(self.firmware))

    def lab_refusal(self) -> str | None:
        return None


def _real(path: Path) -> Path:
    """``path`` with ``~`` expanded and symlinks resolved (a host's view binds real paths)."""
    return Path(os.path.realpath(path.expanduser()))

    def nested_refusal(self) -> str | None:
        return (f"{NESTED_WHY} a {self.kind} build is built for this machine (x86-64), and "
                "building it for ppc64el is not supported yet")
