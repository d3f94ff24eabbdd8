"""Run one cell: builds -> host pair -> golden guest -> scenario -> checks, with its evidence.

The runner never reports; it fills a :class:`CellRecord` that the pytest
plugin turns into Allure results, pass or fail.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from harness.builds.introspect import introspect
from harness.builds.lab import on_lab_host
from harness.builds.model import Build, BuildInfo, MachineInfo
from harness.builds.provision import provision
from harness.builds.spec import BuildSpec
from harness.checks import CheckResult, require_all
from harness.errors import MigrationFailed
from harness.explain import diff_last_hop, summarise_streams
from harness.guest.image import GoldenImage, ensure_golden_image
from harness.hosts.local import LocalHost
from harness.hosts.ssh import SshHost
from harness.hosts.workspace import Workspace, workspace_for
from harness.matrix.model import Cell, LabHost, Matrix
from harness.migration.run import STREAM_PREFIX, MigrationResult
from harness.placement import lab_target, place
from harness.qemu.argv import SidePaths, qemu_argv
from harness.qemu.machine import MachineSetup, common_properties
from harness.qemu.process import QemuProcess
from harness.rundir import make_rundir
from harness.scenarios import NEEDS_LOCAL_BUILDS, SCENARIOS, ScenarioResult
from harness.scenarios.context import ScenarioContext
from harness.timing import timed


class CellImpossible(Exception):
    """The cell cannot exist (e.g. a build lacks the machine type): skipped, with the reason."""


@dataclass
class CellRecord:
    """Everything worth reporting about one cell, filled in as it runs."""

    cell: Cell
    evidence: Path
    parameters: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    observations: ScenarioResult | None = None
    migrations: list[MigrationResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)


@cache
def _provisioned(spec: BuildSpec, lab: LabHost | None) -> tuple[Build, BuildInfo]:
    """The build, on this machine or on lab host ``lab``, and what it supports."""
    if lab is None:
        build = provision(spec)
        return build, introspect(build)
    with SshHost(lab_target(lab)) as host:
        build = on_lab_host(spec, host)
        return build, introspect(build, host)


def resolve_machine(cell: Cell, src: BuildInfo, dst: BuildInfo) -> tuple[MachineInfo, MachineInfo]:
    """The machine type on both sides, or :class:`CellImpossible` saying which side lacks it."""
    name = cell.machine
    if name == "latest-common":
        common = sorted(set(src.pseries_versions()) & set(dst.pseries_versions()),
                        key=src.pseries_versions().index)
        if not common:
            raise CellImpossible(f"{cell.src} and {cell.dst} share no versioned pseries machine")
        name = common[-1]
    sides = []
    for build_name, info in ((cell.src, src), (cell.dst, dst)):
        machine = info.machine(name)
        if machine is None:
            versions = info.pseries_versions()
            have = f"{versions[0]} to {versions[-1]}" if versions else "none"
            raise CellImpossible(
                f"{build_name} (QEMU {info.version}) has no machine type {name} "
                f"(its versioned pseries types are {have})"
            )
        sides.append(machine)
    return sides[0], sides[1]


def run_cell(cell: Cell, matrix: Matrix, record: CellRecord, host: LocalHost | None = None) -> None:
    """Run ``cell`` to the end; raises ProductFailure, HarnessError or CellImpossible."""
    host = host or LocalHost()
    started = time.monotonic()
    try:
        if matrix.lab and cell.scenario in NEEDS_LOCAL_BUILDS:
            raise CellImpossible(f"scenario {cell.scenario} records reference streams with the "
                                 "builds on this machine; lab builds live on the lab hosts")
        with timed(record.phases, "provision"):
            src_lab, dst_lab = matrix.lab or (None, None)
            src_build, src_info = _provisioned(matrix.builds[cell.src], src_lab)
            dst_build, dst_info = _provisioned(matrix.builds[cell.dst], dst_lab)
            image = ensure_golden_image()
        src_machine, dst_machine = resolve_machine(cell, src_info, dst_info)
        setup = _setup(matrix, image, src_machine, dst_machine)
        record.parameters.update({
            "source build": f"{cell.src} (QEMU {src_info.version}, {src_info.package or 'path'})",
            "destination build": f"{cell.dst} (QEMU {dst_info.version}, {dst_info.package or 'path'})",
            "machine": setup.machine_arg(),
            "firmware": setup.firmware,
            "guest image": image.image_id,
            "hosts": (f"lab {matrix.lab[0].address} > {matrix.lab[1].address}" if matrix.lab
                      else matrix.hosts),
            "accel": matrix.accel,
        })
        _run_pair(cell, matrix, record, host, (src_build, dst_build), setup)
    finally:
        record.phases["total"] = time.monotonic() - started


def _setup(matrix: Matrix, image: GoldenImage, src: MachineInfo, dst: MachineInfo) -> MachineSetup:
    guest = matrix.guest
    props, firmware = common_properties(src, dst, accel=matrix.accel, firmware=guest.firmware, extra={})
    return MachineSetup(
        machine=src.name, properties=props, firmware=firmware, accel=matrix.accel, cpu=guest.cpu,
        memory_mb=guest.memory_mb, smp=guest.smp, maxcpus=guest.maxcpus, devices=guest.devices,
        kernel=image.kernel, initrd=image.initrd, append=image.kernel_cmdline,
    )


def _run_pair(
    cell: Cell, matrix: Matrix, record: CellRecord, host: LocalHost,
    builds: tuple[Build, Build], setup: MachineSetup,
) -> None:
    rundir = make_rundir()  # evidence moves to reports/ afterwards, whatever happened
    readable = sorted({setup.kernel.parent, setup.initrd.parent})
    recording = matrix.keep_streams != "none"
    passed = False
    try:
        with ExitStack() as stack:
            placement = place(matrix, builds, rundir, readable, recording, host, stack)
            workspaces: dict[int, Workspace] = {}
            sides: list[QemuProcess] = []

            def start_side(role: str, build: Build, incoming: bool) -> QemuProcess:
                on = placement.hosts[role]
                if id(on) not in workspaces:
                    workspaces[id(on)] = stack.enter_context(workspace_for(on, rundir, readable))
                ws = workspaces[id(on)]
                paths = SidePaths.for_role(rundir, role)
                staged = replace(setup, kernel=ws.stage(setup.kernel), initrd=ws.stage(setup.initrd))
                argv = qemu_argv(build, staged, SidePaths.for_role(ws.path(rundir), role),
                                 incoming=incoming)
                (rundir / f"{role}-argv.txt").write_text("\n".join(argv) + "\n")
                side = stack.enter_context(QemuProcess(role, on, build, argv, paths, ws))
                sides.append(side)
                side.start()
                return side

            try:
                with timed(record.phases, "boot"):
                    src = start_side("src", builds[0], False)
                    dst = start_side("dst", builds[1], True)
                ctx = ScenarioContext(
                    src, dst, builds, setup, rundir, matrix.timeouts, placement.transport_to,
                    record_stream=recording, start_return=lambda: start_side("back", builds[0], True),
                    phases=record.phases, migrations=record.migrations,
                )
                record.observations = SCENARIOS[cell.scenario](ctx)
                with timed(record.phases, "check"):
                    record.checks = record.observations.checks(matrix.tb_slack_ms)
            except MigrationFailed:
                if matrix.lab is None:  # the diff records reference streams on this machine
                    diff_last_hop(rundir, {"src": builds[0], "dst": builds[1], "back": builds[0]}, setup)
                raise
            finally:
                summarise_streams(rundir)
                for side in sides:
                    if side.console.corrupt_lines:
                        (rundir / f"{side.role}-corrupt-lines.txt").write_text(
                            "\n".join(side.console.corrupt_lines) + "\n")
        require_all(record.checks)
        passed = True
    finally:
        _keep_evidence(rundir, record.evidence, keep_stream=keeps_stream(matrix.keep_streams, passed))


def keeps_stream(policy: str, passed: bool) -> bool:
    return policy == "all" or (policy == "failed" and not passed)


def _keep_evidence(rundir: Path, evidence: Path, keep_stream: bool) -> None:
    """Move the cell's files to ``evidence``; the recorded stream only if the policy keeps it."""
    try:
        shutil.rmtree(evidence, ignore_errors=True)
        evidence.mkdir(parents=True)
        for item in rundir.iterdir():
            is_stream = item.name.startswith(STREAM_PREFIX) and item.suffix == ".bin"
            if item.is_file() and not item.is_socket() and (keep_stream or not is_stream):
                shutil.move(str(item), evidence / item.name)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)

