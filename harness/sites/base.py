"""The site seam: where a cell's QEMUs run (this machine, a pair of namespaces, lab hosts).

A site kind is one module with a class that answers the questions below, registered by
name in :data:`harness.sites.SITES`; ``hosts:`` in matrix.yaml names the kind. The cell
runner asks only these questions, never the kind's name.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from harness.builds.model import Build, BuildInfo
from harness.builds.spec import BuildSpec
from harness.hosts.base import Host
from harness.hosts.local import LocalHost
from harness.migration.transport import Transport
from harness.runner.roles import SideName

if TYPE_CHECKING:
    from harness.matrix.model import Matrix
    from harness.runner.side import Side


@dataclass(frozen=True)
class Placement:
    hosts: dict[str, Host]
    """Where each role (:data:`harness.runner.roles.ROLES`) runs."""
    transport_to: Callable[[Side, Side], Transport]
    """The route from a sending QEMU to a receiving one."""


class Site(Protocol):
    """Where a cell's two sides run; made from the matrix by :meth:`from_matrix`."""

    kind: ClassVar[str]
    """The ``hosts:`` value that selects it."""
    builds_here: ClassVar[bool]
    """The builds are on this machine (streams of them can be recorded here for a diff)."""

    @property
    def accel(self) -> str:
        """The accelerator its QEMUs run the guest with (``tcg``, ``kvm``)."""
        ...

    @property
    def in_kernel_irqchip(self) -> bool:
        """KVM's in-kernel XIVE/XICS device is there (a physical POWER host)."""
        ...

    @property
    def guest_caps(self) -> tuple[tuple[str, str], ...]:
        """spapr caps its hosts cannot provide, set so on both sides (TCG lacks the Spectre
        workarounds' instructions and HTM)."""
        ...

    @classmethod
    def from_matrix(cls, matrix: Matrix) -> Site: ...

    def describe(self) -> str:
        """For a cell's parameters: where it ran."""
        ...

    def locate(self, spec: BuildSpec, side: SideName) -> Build:
        """The build as side ``side`` has it, checked there; nothing started yet."""
        ...

    def supports(self, build: Build, side: SideName) -> BuildInfo:
        """What ``build`` supports, asked where it runs (this starts its QEMU once; cached)."""
        ...

    def refusal(self, scenario: str, local_builds: bool) -> str | None:
        """Why a scenario cannot run here (``local_builds``: it records reference streams with
        the builds on this machine), or None."""
        ...

    def place(self, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
              local: LocalHost, stack: ExitStack) -> Placement:
        """A host for every role and the routes between them; ``stack`` closes what is made."""
        ...

    def sweep(self) -> None:
        """Remove what runs that were killed outright left here (before a run starts)."""
        ...
