"""``hosts: lab``: the source (and a return) on the lab's source host, the destination (and
further ones) on its destination host, reached over SSH; TCP across the lab network. Builds
are installed on the lab hosts, never provisioned from here."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.introspect import introspect
from harness.builds.model import Build, BuildInfo
from harness.builds.spec import BuildSpec
from harness.hosts.local import LocalHost
from harness.hosts.ssh import SshHost, SshTarget
from harness.matrix.model import LabHost
from harness.migration.transport import LabTransport
from harness.qemu.machine import TCG_CAP_SETTINGS
from harness.runner.roles import ROLES, SideName
from harness.sites.base import Placement

if TYPE_CHECKING:
    from harness.matrix.model import Matrix


def lab_target(lab: LabHost) -> SshTarget:
    """How to reach a lab host: its key must already be in ``known_hosts``; nothing is shared."""
    return SshTarget(
        name=lab.name, address=lab.address, port=lab.port, user=lab.user,
        key_file=Path(lab.key_file).expanduser() if lab.key_file else None,
        known_hosts=Path(lab.known_hosts), netns=lab.netns, workdir=lab.workdir,
    )


@cache
def _installed(spec: BuildSpec, lab: LabHost) -> Build:
    with SshHost(lab_target(lab)) as host:
        return spec.on_lab_host(host)


@cache
def _introspected(build: Build, lab: LabHost) -> BuildInfo:
    with SshHost(lab_target(lab)) as host:
        return introspect(build, host)


@dataclass(frozen=True)
class LabSite:
    kind: ClassVar[str] = "lab"
    builds_here: ClassVar[bool] = False
    source: LabHost
    destination: LabHost

    @classmethod
    def from_matrix(cls, matrix: Matrix) -> LabSite:
        assert matrix.lab is not None, "matrix.yaml's loader requires lab: with hosts: lab"
        return cls(*matrix.lab)

    @property
    def accel(self) -> str:
        return self.source.accel

    @property
    def in_kernel_irqchip(self) -> bool:
        return self.accel == "kvm"  # a lab's KVM host is a POWER machine

    @property
    def guest_caps(self) -> tuple[tuple[str, str], ...]:
        return TCG_CAP_SETTINGS if self.accel == "tcg" else ()

    def host(self, side: SideName) -> LabHost:
        return self.source if side == "a" else self.destination

    def describe(self) -> str:
        return f"lab {self.source.address} > {self.destination.address}"

    def locate(self, spec: BuildSpec, side: SideName) -> Build:
        return _installed(spec, self.host(side))

    def supports(self, build: Build, side: SideName) -> BuildInfo:
        return _introspected(build, self.host(side))

    def refusal(self, scenario: str, local_builds: bool) -> str | None:
        if local_builds:
            return (f"scenario {scenario} records reference streams with the builds on this "
                    "machine; lab builds live on the lab hosts")
        return None

    def place(self, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
              local: LocalHost, stack: ExitStack) -> Placement:
        hosts: dict[str, SshHost] = {side: stack.enter_context(SshHost(lab_target(self.host(side))))
                                  for side in ("a", "b")}
        by_role = {name: hosts[r.side] for name, r in ROLES.items()}
        return Placement(dict(by_role), lambda src, dst: LabTransport(
            dst, by_role[src.role], by_role[dst.role], self.host(ROLES[dst.role].side).address,
            recording))

    def sweep(self) -> None:
        return None  # a lab host's QEMUs end with their SSH session
