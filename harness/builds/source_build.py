"""``kind: source``: QEMU built here from a source tree, with an optional patch series.

The tree is a git checkout or an unpacked source package (``apt-get source qemu``); it is
never written to. Its copy is configured for ``ppc64-softmmu`` and built with ninja by
:mod:`harness.builds.compile`, and the result is cached by what it was made from (the
tree's state, the patches' content, the configure line), so a second use is a cache hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.compile import SourceRecipe, built
from harness.builds.model import Build
from harness.errors import BuildError

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost
    from harness.matrix.reader import Reader

_ON_LAB = ("is built on this machine, which a lab host cannot run from; build it on the lab host "
           "(or copy its build tree there) and declare it there as kind path")


@dataclass(frozen=True)
class SourceBuild:
    kind: ClassVar[str] = "source"
    name: str
    tree: Path
    patches: tuple[Path, ...] = ()
    configure: tuple[str, ...] = ()
    firmware: Path | None = None
    """SLOF and VOF, when the tree has none (a Debian ``+ds`` tree strips them)."""

    @classmethod
    def from_matrix(cls, name: str, entry: Reader) -> SourceBuild:
        entry.only("kind", "tree", "patches", "configure", "firmware")
        patches = entry.get("patches", list, [])
        configure = entry.get("configure", list, [])
        for key, values in (("patches", patches), ("configure", configure)):
            for i, value in enumerate(values):
                if not isinstance(value, str):
                    raise entry.error(f"{key}[{i}]", f"must be a string, got {value!r}")
        firmware = entry.get("firmware", str, None)
        return cls(name, Path(entry.get("tree", str, required=True)).expanduser(),
                   tuple(Path(p).expanduser() for p in patches), tuple(configure),
                   Path(firmware).expanduser() if firmware else None)

    def provision(self) -> Build:
        return built(SourceRecipe(self.name, self.tree, self.patches, self.configure, self.firmware))

    def on_lab_host(self, host: SshHost) -> Build:
        raise BuildError(f"build {self.name!r} {_ON_LAB}")

    def lab_refusal(self) -> str | None:
        return _ON_LAB
