"""The direct driver: QEMU started from its command line, driven over its QMP socket, migrated
over the site's transports (:mod:`harness.migration.transport`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.model import Build
from harness.builds.spec import BuildSpec
from harness.hosts.local import LocalHost
from harness.hosts.workspace import Workspace
from harness.migration.run import MigrationResult, migrate, stream_path
from harness.qemu.argv import SidePaths, qemu_argv
from harness.qemu.machine import MachineSetup
from harness.qemu.process import QemuProcess
from harness.sites.base import Placement, Site

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side


@dataclass
class QemuDriver:
    name: ClassVar[str] = "qemu"
    placement: Placement
    label: str = "qemu"

    @classmethod
    def refusal(cls, site: Site, specs: tuple[BuildSpec, BuildSpec]) -> str | None:
        return None

    @classmethod
    def builds(cls, specs: tuple[BuildSpec, BuildSpec], located: tuple[Build, Build]) -> tuple[Build, Build]:
        return located

    @classmethod
    def open(cls, site: Site, builds: tuple[Build, Build], rundir: Path, readable: list[Path],
             recording: bool, local: LocalHost, stack: ExitStack, phases: dict[str, float]) -> QemuDriver:
        return cls(site.place(builds, rundir, readable, recording, local, stack))

    @classmethod
    def sweep(cls, site: Site) -> None:
        return None  # its QEMUs end with their hosts (the site sweeps those)

    def start(self, ctx: ScenarioContext, role: str, build: Build, setup: MachineSetup,
              ws: Workspace, incoming: bool) -> QemuProcess:
        argv = qemu_argv(build, setup, SidePaths.for_role(ws.path(ctx.rundir), role), incoming=incoming)
        (ctx.rundir / f"{role}-argv.txt").write_text("\n".join(argv) + "\n")
        side = ctx.stack.enter_context(
            QemuProcess(role, self.placement.hosts[role], build, argv,
                        SidePaths.for_role(ctx.rundir, role), ws))
        ctx.started.append(side)
        with ctx.phase("boot"):
            side.start()
        return side

    def migrate(self, ctx: ScenarioContext, src: Side, dst: Side, *,
                timeout: float, cut_after_bytes: int | None,
                while_active: Callable[[], None] | None = None) -> MigrationResult:
        assert isinstance(src, QemuProcess) and isinstance(dst, QemuProcess)
        record = stream_path(ctx.rundir, src, dst) if ctx.record_stream else None
        return migrate(src, dst, self.placement.transport_to(src, dst), timeout=timeout,
                       record=record, cut_after_bytes=cut_after_bytes, while_active=while_active,
                       evidence=ctx.rundir)
