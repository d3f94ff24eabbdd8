"""The seam between scenarios and what runs the guest: QEMU command lines or libvirt.

A scenario's ``ctx.start`` and ``ctx.migrate`` go through the cell's driver.
:class:`QemuDriver` is the direct driver (QEMU argv, QMP, the transports of
:mod:`harness.migration.transport`); the libvirt driver is
:class:`harness.libvirt.driver.LibvirtDriver`. What a scenario does to a running guest's
machine it asks of the side (e.g. :meth:`harness.qemu.process.QemuProcess.plug_dimm`): the
direct driver's side does it over QMP, the libvirt driver's
(:class:`harness.libvirt.side.LibvirtSide`) through libvirt's API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from harness.builds.model import Build
from harness.hosts.workspace import Workspace
from harness.migration.run import MigrationResult, migrate, stream_path
from harness.qemu.argv import SidePaths, qemu_argv
from harness.qemu.machine import MachineSetup
from harness.qemu.process import QemuProcess

if TYPE_CHECKING:
    from harness.context import ScenarioContext

class Driver(Protocol):
    """Starts a role's guest and migrates it; whatever it starts, ``ctx.stack`` stops."""

    def start(self, ctx: ScenarioContext, role: str, build: Build, setup: MachineSetup,
              ws: Workspace, incoming: bool) -> QemuProcess: ...

    def migrate(self, ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, *,
                timeout: float, cut_after_bytes: int | None,
                while_active: Callable[[], None] | None = None) -> MigrationResult: ...


class QemuDriver:
    """QEMU started from its command line, driven over its QMP socket."""

    def start(self, ctx: ScenarioContext, role: str, build: Build, setup: MachineSetup,
              ws: Workspace, incoming: bool) -> QemuProcess:
        argv = qemu_argv(build, setup, SidePaths.for_role(ws.path(ctx.rundir), role), incoming=incoming)
        (ctx.rundir / f"{role}-argv.txt").write_text("\n".join(argv) + "\n")
        side = ctx.stack.enter_context(
            QemuProcess(role, ctx.placement.hosts[role], build, argv,
                        SidePaths.for_role(ctx.rundir, role), ws))
        ctx.started.append(side)
        with ctx.phase("boot"):
            side.start()
        return side

    def migrate(self, ctx: ScenarioContext, src: QemuProcess, dst: QemuProcess, *,
                timeout: float, cut_after_bytes: int | None,
                while_active: Callable[[], None] | None = None) -> MigrationResult:
        record = stream_path(ctx.rundir, src, dst) if ctx.record_stream else None
        return migrate(src, dst, ctx.placement.transport_to(src, dst), timeout=timeout,
                       record=record, cut_after_bytes=cut_after_bytes, while_active=while_active,
                       evidence=ctx.rundir)
