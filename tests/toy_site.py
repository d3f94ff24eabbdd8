"""A toy site kind, the way a new one is added: this module plus one line of registration
(``SITES["toy"] = "toy_site:ToySite"``). Every role runs on this machine, as with
``hosts: local``, through a host that writes down each QEMU it starts."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.builds.model import Build
from harness.hosts.base import Process
from harness.hosts.local import LocalHost
from harness.migration.transport import LocalTransport
from harness.runner.roles import ROLES
from harness.sites.base import Placement
from harness.sites.local import OnThisMachine


class NotingHost(LocalHost):
    """This machine, noting each spawn in ``<rundir>/toy-spawns.txt``."""

    def __init__(self, notes: Path) -> None:
        super().__init__()
        self.notes = notes

    def spawn(self, build: Build, argv: Sequence[str], *, writable: Sequence[Path],
              readable: Sequence[Path], output: Path) -> Process:
        with self.notes.open("a") as notes:
            notes.write(f"{build.name} {output.name}\n")
        return super().spawn(build, argv, writable=writable, readable=readable, output=output)


@dataclass(frozen=True)
class ToySite(OnThisMachine):
    kind: ClassVar[str] = "toy"

    def describe(self) -> str:
        return "toy (this machine, spawns noted)"

    def place(self, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
              local: LocalHost, stack: ExitStack) -> Placement:
        host = NotingHost(rundir / "toy-spawns.txt")
        return Placement({role: host for role in ROLES}, lambda src, dst: LocalTransport(rundir, dst.role))
