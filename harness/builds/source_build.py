"""``kind: source``: QEMU built here from a source tree, with an optional patch series.

The tree is a git checkout or an unpacked source package (``apt-get source qemu``), or
``debian:`` names a Debian source package that goldmig fetches and unpacks into the cache;
it is never written to. Its copy is configured for ``ppc64-softmmu`` and built with ninja by
:mod:`harness.builds.compile`, and the result is cached by what it was made from (the
tree's state, the patches' content, the configure line), so a second use is a cache hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.compile import SourceRecipe, built
from harness.builds.debian import FIRMWARE_DIR, ensure_suite_root
from harness.builds.debian_source import DEFAULT_MIRROR, qemu_source
from harness.builds.model import Build
from harness.builds.nested_host import NESTED_WHY
from harness.errors import BuildError

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost
    from harness.matrix.reader import Reader

_ON_LAB = ("is built on this machine, which a lab host cannot run from; build it on the lab host "
           "(or copy its build tree there) and declare it there as kind path")


@dataclass(frozen=True)
class DebianSourcePackage:
    """``debian: {suite, version}``: Debian's QEMU source package, fetched on first use."""
    suite: str
    version: str | None = None
    """A suite such as sid can carry several versions; without one, the suite's newest."""
    mirror: str = DEFAULT_MIRROR

    def tree(self) -> Path:
        return qemu_source(self.suite, self.mirror, self.version)


@dataclass(frozen=True)
class SuiteFirmware:
    """``firmware: {suite: S}``: SLOF and VOF from the Debian suite root ``S`` (the one a
    ``kind: debian`` build of that suite runs from), debootstrapped on first use."""
    suite: str

    def directory(self) -> Path:
        return ensure_suite_root(self.suite) / FIRMWARE_DIR


@dataclass(frozen=True)
class SourceBuild:
    kind: ClassVar[str] = "source"
    name: str
    tree: Path | DebianSourcePackage
    patches: tuple[Path, ...] = ()
    configure: tuple[str, ...] = ()
    firmware: Path | SuiteFirmware | None = None
    """SLOF and VOF, when the tree has none (a Debian ``+ds`` tree strips them)."""

    @classmethod
    def from_matrix(cls, name: str, entry: Reader) -> SourceBuild:
        entry.only("kind", "tree", "debian", "patches", "configure", "firmware")
        patches = entry.get("patches", list, [])
        configure = entry.get("configure", list, [])
        for key, values in (("patches", patches), ("configure", configure)):
            for i, value in enumerate(values):
                if not isinstance(value, str):
                    raise entry.error(f"{key}[{i}]", f"must be a string, got {value!r}")
        return cls(name, _tree(entry), tuple(Path(p).expanduser() for p in patches),
                   tuple(configure), _firmware(entry))

    def provision(self) -> Build:
        tree = self.tree if isinstance(self.tree, Path) else self.tree.tree()
        firmware = self.firmware.directory() if isinstance(self.firmware, SuiteFirmware) else self.firmware
        return built(SourceRecipe(self.name, tree, self.patches, self.configure, firmware))

    def on_lab_host(self, host: SshHost) -> Build:
        raise BuildError(f"build {self.name!r} {_ON_LAB}")

    def lab_refusal(self) -> str | None:
        return _ON_LAB

    def nested_refusal(self) -> str | None:
        return (f"{NESTED_WHY} a {self.kind} build is built for this machine (x86-64), and "
                "building it for ppc64el is not supported yet")


def _tree(entry: Reader) -> Path | DebianSourcePackage:
    if ("tree" in entry.data) == ("debian" in entry.data):
        raise entry.error("tree", "give either `tree:` (a source tree on this machine) or `debian:` "
                          "(a Debian source package, e.g. {suite: sid, version: '1:10.2.2+ds-1'})")
    if "tree" in entry.data:
        return Path(entry.get("tree", str)).expanduser()
    package = entry.sub("debian")
    package.only("suite", "version", "mirror")
    return DebianSourcePackage(package.get("suite", str, required=True), package.get("version", str, None),
                               package.get("mirror", str, DEFAULT_MIRROR))


def _firmware(entry: Reader) -> Path | SuiteFirmware | None:
    value = entry.data.get("firmware")
    if value is None or isinstance(value, str):
        return Path(value).expanduser() if value else None
    root = entry.sub("firmware")
    root.only("suite")
    return SuiteFirmware(root.get("suite", str, required=True))
