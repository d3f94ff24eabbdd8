"""``hosts: local``: every role on this machine, unix sockets in the run directory."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from harness.builds.introspect import introspect
from harness.builds.model import Build, BuildInfo
from harness.builds.spec import BuildSpec
from harness.hosts.local import LocalHost
from harness.migration.transport import LocalTransport
from harness.qemu.machine import TCG_CAP_SETTINGS
from harness.runner.roles import ROLES, SideName
from harness.sites.base import Placement

if TYPE_CHECKING:
    from harness.matrix.model import Matrix


@cache
def provisioned(spec: BuildSpec) -> Build:
    """The build on this machine (provisioned once per process)."""
    return spec.provision()


@cache
def introspected(build: Build) -> BuildInfo:
    """What a build on this machine supports (asked once per process)."""
    return introspect(build)


@dataclass(frozen=True)
class OnThisMachine:
    """What every site whose builds are on this machine shares: locating and asking them here."""

    kind: ClassVar[str]
    builds_here: ClassVar[bool] = True
    accel: ClassVar[str] = "tcg"
    in_kernel_irqchip: ClassVar[bool] = False
    guest_caps: ClassVar[tuple[tuple[str, str], ...]] = TCG_CAP_SETTINGS

    @classmethod
    def from_matrix(cls, matrix: Matrix) -> Self:
        return cls()

    def describe(self) -> str:
        return self.kind

    def locate(self, spec: BuildSpec, side: SideName) -> Build:
        return provisioned(spec)

    def supports(self, build: Build, side: SideName) -> BuildInfo:
        return introspected(build)

    def refusal(self, scenario: str, local_builds: bool) -> str | None:
        return None

    def sweep(self) -> None:
        return None


@dataclass(frozen=True)
class LocalSite(OnThisMachine):
    kind: ClassVar[str] = "local"

    def place(self, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
              local: LocalHost, stack: ExitStack) -> Placement:
        return Placement({role: local for role in ROLES},
                         lambda src, dst: LocalTransport(rundir, dst.role))
