"""``kind: debian``: QEMU from a Debian suite, run from a debootstrap root filesystem made on
this machine (:mod:`harness.builds.debian`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from harness.builds.debian import ensure_suite_root, package_version
from harness.builds.model import Build
from harness.builds.nested_host import NESTED_SUITE, NESTED_WHY
from harness.errors import BuildError

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost
    from harness.matrix.reader import Reader


@dataclass(frozen=True)
class DebianSuiteBuild:
    kind: ClassVar[str] = "debian"
    name: str
    suite: str
    mirror: str = "http://deb.debian.org/debian"
    backports: bool = False
    """QEMU from ``<suite>-backports`` (the newest a stable release ships) over the suite's root."""

    @classmethod
    def from_matrix(cls, name: str, entry: Reader) -> DebianSuiteBuild:
        entry.only("kind", "suite", "mirror", "backports")
        return cls(name, entry.get("suite", str, required=True),
                   entry.get("mirror", str, "http://deb.debian.org/debian"),
                   entry.get("backports", bool, False))

    def provision(self) -> Build:
        root = ensure_suite_root(self.suite, self.mirror, self.backports)
        return Build(self.name, root, "/usr/bin/qemu-system-ppc64", package=package_version(root))

    def on_lab_host(self, host: SshHost) -> Build:
        raise BuildError(f"build {self.name!r} is a Debian suite root on this machine; "
                         "lab hosts run kind host or kind path builds")

    def lab_refusal(self) -> str | None:
        return ("is a Debian suite root on this machine, which lab hosts do not have; with "
                "`hosts: lab` use kind host (the lab host's own QEMU) or kind path (a build "
                "installed at that path on the lab hosts)")

    def nested_refusal(self) -> str | None:
        if self.suite == NESTED_SUITE and not self.backports:
            return None
        return (f"{NESTED_WHY} Debian {self.suite}{'-backports' if self.backports else ''}'s "
                "ppc64el packages are not all on this machine's package mirror (trixie: 404 from "
                "libc6 2.41-12+deb13u5 on; bullseye: no ppc64el index), so no ppc64el root of it "
                "can be made")
