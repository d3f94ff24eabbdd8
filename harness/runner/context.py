"""What a scenario is given at run time: start QEMUs, migrate between them, talk to the guest.

A scenario starts the QEMUs it needs (``ctx.start``), so it decides what each
side runs with: a destination with a device plugged, a third QEMU for a
return hop. Every QEMU started here is stopped when the cell ends, whatever
happened (the cell's ExitStack owns it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.builds.model import Build
from harness.checks.result import Limits
from harness.drivers.base import Driver
from harness.errors import HarnessError
from harness.hostload.errors import HostLoadError
from harness.hostload.hop import HopWatch
from harness.hostload.meter import StarvationMeter
from harness.hosts.workspace import Workspace, workspace_for
from harness.matrix.model import Timeouts
from harness.migration.run import MigrationResult, wait_destination_running
from harness.qemu.machine import MachineSetup
from harness.runner.roles import ROLES, Hop, role
from harness.runner.side import Side
from harness.runner.timing import timed
from harness.scenarios.declare import Variant


@dataclass
class ScenarioContext:
    """The cell's builds and machine set-ups, and the means to run them.

    ``setups`` maps ``src`` and ``dst`` to what each side starts with (the
    variant's changes applied); a return destination starts like ``src``,
    further ones (``again``, ``onward``) like ``dst``.
    """

    builds: tuple[Build, Build]
    setups: dict[str, MachineSetup]
    variant: Variant[Any]
    rundir: Path
    timeouts: Timeouts
    limits: Limits
    driver: Driver
    """What starts and migrates the guest (QEMU command lines, or libvirt), and where."""
    stack: ExitStack
    readable: list[Path]
    record_stream: bool = True
    phases: dict[str, float] = field(default_factory=dict)
    migrations: list[MigrationResult] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    """Every migration attempted, in order (``migrations`` has the ones that completed)."""
    started: list[Side] = field(default_factory=list)
    _workspaces: dict[int, Workspace] = field(default_factory=dict)
    _meters: dict[int, StarvationMeter | None] = field(default_factory=dict)
    _watches: dict[int, HopWatch] = field(default_factory=dict)
    _conts: dict[int, float] = field(default_factory=dict)

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Time a block as one of the benchmark's phases (boot, migrate, check, ...)."""
        return timed(self.phases, name)

    @property
    def setup(self) -> MachineSetup:
        """The source's machine set-up (what a cell without per-side changes runs everywhere)."""
        return self.setups["src"]

    def build_of(self, name: str) -> Build:
        return self.builds[1] if role(name).like == "dst" else self.builds[0]

    def setup_of(self, name: str) -> MachineSetup:
        return self.setups[role(name).like]

    def start(self, name: str, build: Build | None = None, *, setup: MachineSetup | None = None,
              incoming: bool | None = None) -> Side:
        """Start QEMU for role ``name`` (one of :data:`harness.runner.roles.ROLES`) and connect
        its QMP and console.

        By default a role runs its side's build and set-up; the source starts
        paused (``-S``), every other role waits for an incoming migration.
        """
        role(name)
        build = build or self.build_of(name)
        setup = setup or self.setup_of(name)
        incoming = name != "src" if incoming is None else incoming
        on = self.driver.placement.hosts.get(name)
        if on is None:
            raise HarnessError(f"the {self.driver.label} driver does not place role {name} "
                               f"({ROLES[name].title}); it places {', '.join(self.driver.placement.hosts)}")
        if id(on) not in self._workspaces:
            self._workspaces[id(on)] = self.stack.enter_context(workspace_for(on, self.rundir, self.readable))
        ws = self._workspaces[id(on)]
        staged = replace(setup, kernel=ws.stage(setup.kernel), initrd=ws.stage(setup.initrd))
        return self.driver.start(self, name, build, staged, ws, incoming)

    def cont(self, side: Side) -> float:
        """Let the paused ``side`` run (QMP ``cont``), once; returns when it was told to.

        The guest boots from then on, so what the scenario does next (start the
        destination) overlaps its boot; :func:`harness.scenarios.steps.boot`
        then waits for the guest (and sends ``cont`` itself if nobody did).
        """
        if id(side) not in self._conts:
            self._conts[id(side)] = time.monotonic()
            side.monitor.cmd("cont")
        return self._conts[id(side)]

    def migrate(self, src: Side, dst: Side, *, timeout: float | None = None,
                cut_after_bytes: int | None = None,
                while_active: Callable[[], None] | None = None) -> MigrationResult:
        """Migrate ``src`` to ``dst`` (recording the stream unless the matrix says none); see
        :func:`harness.migration.run.migrate` for ``cut_after_bytes`` and ``while_active``."""
        windows = tuple(meter.start() for side in (src, dst) if (meter := self._meter(side)))
        self.hops.append(Hop(src.role, dst.role))
        with self.phase("migrate"):
            result = self.driver.migrate(
                self, src, dst, timeout=self.timeouts.migrate_s if timeout is None else timeout,
                cut_after_bytes=cut_after_bytes, while_active=while_active)
        self.migrations.append(result)
        self._watches[id(dst)] = HopWatch(windows)
        return result

    def hop_watch(self, dst: Side) -> HopWatch | None:
        """The host's starvation windows on both sides of the hop to ``dst``, still open (the
        tick gaps close them: :func:`harness.scenarios.steps.tick_gaps`); None when not read."""
        return self._watches.pop(id(dst), None)

    def _meter(self, side: Side) -> StarvationMeter | None:
        if id(side) not in self._meters:
            try:
                self._meters[id(side)] = StarvationMeter.attach(side)
            except HostLoadError:  # a side whose threads cannot be read (libvirt's): not measured
                self._meters[id(side)] = None
        return self._meters[id(side)]

    def load_stream(self, dst: Side, stream: Path) -> None:
        """Load a stored stream into ``dst`` (started incoming) as a restore would; returns once
        the guest runs there."""
        dst.monitor.cmd("migrate-incoming", uri=f"exec:cat {dst.workspace.stage(stream)}")
        wait_destination_running(dst, self.timeouts.migrate_s)

