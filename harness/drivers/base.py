"""The driver seam: who starts the guest's QEMUs and migrates between them.

A scenario's ``ctx.start`` and ``ctx.migrate`` go through the cell's :class:`Driver`.
A driver kind is one module with a class that answers the :class:`DriverKind` questions,
registered by name in :data:`harness.drivers.DRIVERS`; a group's ``drivers:`` in
matrix.yaml names the kinds. What a scenario does to a running guest's
machine it asks of the side (:class:`harness.runner.side.Side`, e.g. ``plug_dimm``), which
each driver implements its own way.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from harness.builds.model import Build
from harness.builds.spec import BuildSpec
from harness.hosts.local import LocalHost
from harness.hosts.workspace import Workspace
from harness.migration.run import MigrationResult
from harness.qemu.machine import MachineSetup
from harness.sites.base import Placement, Site

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side


class Driver(Protocol):
    """One cell's driver, opened for it; whatever it starts, ``ctx.stack`` stops."""

    placement: Placement
    """Where each role runs."""

    @property
    def label(self) -> str:
        """For the cell's parameters: the driver, with what it runs (libvirt's versions)."""
        ...

    def start(self, ctx: ScenarioContext, role: str, build: Build, setup: MachineSetup,
              ws: Workspace, incoming: bool) -> Side: ...

    def migrate(self, ctx: ScenarioContext, src: Side, dst: Side, *,
                timeout: float, cut_after_bytes: int | None,
                while_active: Callable[[], None] | None = None) -> MigrationResult: ...


class DriverKind(Protocol):
    """What the cell runner asks of a driver kind before and when it opens it for a cell."""

    name: ClassVar[str]
    """The ``drivers:`` value that selects it (and the prefix of its cells' ids)."""

    @classmethod
    def refusal(cls, site: Site, specs: tuple[BuildSpec, BuildSpec]) -> str | None:
        """Why it cannot run a cell with these builds on ``site``, or None."""
        ...

    @classmethod
    def builds(cls, specs: tuple[BuildSpec, BuildSpec], located: tuple[Build, Build]) -> tuple[Build, Build]:
        """The located builds as this driver runs them (e.g. in a root with its daemon)."""
        ...

    @classmethod
    def open(cls, site: Site, builds: tuple[Build, Build], rundir: Path, readable: list[Path],
             recording: bool, local: LocalHost, stack: ExitStack, phases: dict[str, float]) -> Driver:
        """The driver for one cell, with its placement; ``stack`` closes what it made."""
        ...

    @classmethod
    def sweep(cls, site: Site) -> None:
        """Remove what runs that were killed outright left (before a run starts)."""
        ...
