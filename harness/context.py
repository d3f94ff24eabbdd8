"""What a scenario is given at run time: start QEMUs, migrate between them, talk to the guest.

A scenario starts the QEMUs it needs (``ctx.start``), so it decides what each
side runs with: a destination with a device plugged, a third QEMU for a
return hop. Every QEMU started here is stopped when the cell ends, whatever
happened (the cell's ExitStack owns it).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.builds.model import Build
from harness.checks.result import Limits
from harness.driver import Driver, QemuDriver
from harness.hostload.errors import HostLoadError
from harness.hostload.hop import HopWatch
from harness.hostload.meter import StarvationMeter
from harness.hosts.workspace import Workspace, workspace_for
from harness.matrix.model import Timeouts
from harness.migration.run import MigrationResult, wait_destination_running
from harness.placement import Placement
from harness.qemu.machine import MachineSetup
from harness.qemu.process import QemuProcess
from harness.scenarios.declare import Variant
from harness.timing import timed

ROLES = ("src", "dst", "back", "again", "onward")
"""src runs the guest first, dst receives it, back is a return destination on src's side; again
and onward are further destinations on dst's side (dst's build and set-up), for hops in a row."""
_DST_SIDE = ("dst", "again", "onward")


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
    placement: Placement
    stack: ExitStack
    readable: list[Path]
    record_stream: bool = True
    phases: dict[str, float] = field(default_factory=dict)
    migrations: list[MigrationResult] = field(default_factory=list)
    started: list[QemuProcess] = field(default_factory=list)
    driver: Driver = field(default_factory=QemuDriver)
    """What starts and migrates the guest: QEMU command lines, or libvirt."""
    _workspaces: dict[int, Workspace] = field(default_factory=dict)
    _meters: dict[int, StarvationMeter | None] = field(default_factory=dict)
    _watches: dict[int, HopWatch] = field(default_factory=dict)

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Time a block as one of the benchmark's phases (boot, migrate, check, ...)."""
        return timed(self.phases, name)

    @property
    def setup(self) -> MachineSetup:
        """The source's machine set-up (what a cell without per-side changes runs everywhere)."""
        return self.setups["src"]

    def build_of(self, role: str) -> Build:
        return self.builds[1] if role in _DST_SIDE else self.builds[0]

    def setup_of(self, role: str) -> MachineSetup:
        return self.setups["dst"] if role in _DST_SIDE else self.setups["src"]

    def start(self, role: str, build: Build | None = None, *, setup: MachineSetup | None = None,
              incoming: bool | None = None) -> QemuProcess:
        """Start QEMU for ``role`` (one of :data:`ROLES`) and connect its QMP and console.

        By default a role runs its side's build and set-up; the source starts
        paused (``-S``), every other role waits for an incoming migration.
        """
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {ROLES}")
        build = build or self.build_of(role)
        setup = setup or self.setup_of(role)
        incoming = role != "src" if incoming is None else incoming
        on = self.placement.hosts[role]
        if id(on) not in self._workspaces:
            self._workspaces[id(on)] = self.stack.enter_context(workspace_for(on, self.rundir, self.readable))
        ws = self._workspaces[id(on)]
        staged = replace(setup, kernel=ws.stage(setup.kernel), initrd=ws.stage(setup.initrd))
        return self.driver.start(self, role, build, staged, ws, incoming)

    def migrate(self, src: QemuProcess, dst: QemuProcess, *, timeout: float | None = None,
                cut_after_bytes: int | None = None,
                while_active: Callable[[], None] | None = None) -> MigrationResult:
        """Migrate ``src`` to ``dst`` (recording the stream unless the matrix says none); see
        :func:`harness.migration.run.migrate` for ``cut_after_bytes`` and ``while_active``."""
        windows = tuple(meter.start() for side in (src, dst) if (meter := self._meter(side)))
        with self.phase("migrate"):
            result = self.driver.migrate(
                self, src, dst, timeout=self.timeouts.migrate_s if timeout is None else timeout,
                cut_after_bytes=cut_after_bytes, while_active=while_active)
        self.migrations.append(result)
        self._watches[id(dst)] = HopWatch(windows)
        return result

    def hop_watch(self, dst: QemuProcess) -> HopWatch | None:
        """The host's starvation windows on both sides of the hop to ``dst``, still open (the
        tick gaps close them: :func:`harness.scenarios.steps.tick_gaps`); None when not read."""
        return self._watches.pop(id(dst), None)

    def _meter(self, side: QemuProcess) -> StarvationMeter | None:
        if id(side) not in self._meters:
            try:
                self._meters[id(side)] = StarvationMeter.attach(side)
            except HostLoadError:  # a side whose threads cannot be read (libvirt's): not measured
                self._meters[id(side)] = None
        return self._meters[id(side)]

    def load_stream(self, dst: QemuProcess, stream: Path) -> None:
        """Load a stored stream into ``dst`` (started incoming) as a restore would; returns once
        the guest runs there."""
        dst.monitor.cmd("migrate-incoming", uri=f"exec:cat {stream}")
        wait_destination_running(dst, self.timeouts.migrate_s)

