"""Golden streams: the golden guest running on one build, saved once (cached) and copied out,
for `goldmig save` and for cells that load a stored stream."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.builds.introspect import introspect
from harness.builds.model import Build
from harness.errors import ConfigError
from harness.matrix.model import Matrix
from harness.qemu.machine import TCG_CAP_SETTINGS, MachineSetup, common_properties
from harness.stream.corpus import golden_boot
from harness.stream.recorder import StreamRecipe, record_stream


def stopped_machine(setup: MachineSetup) -> StreamRecipe:
    """A stopped machine (no guest) with a cell's machine type, options, CPUs and devices: what
    a build sends for that machine, to compare builds by (with the cell's own devices, so that a
    break in one of them ranks where it belongs in the diff)."""
    return StreamRecipe(machine=setup.machine, properties=setup.properties, cpu=setup.cpu,
                        memory_mb=setup.memory_mb, smp=setup.smp, maxcpus=setup.maxcpus,
                        devices=setup.devices)


def golden_stream(build: Build, setup: MachineSetup, rundir: Path) -> Path:
    """The golden guest on ``build`` with a cell's machine, options and devices, copied into
    the cell's run directory, where every sandbox sees it."""
    recipe = StreamRecipe(machine=setup.machine, properties=setup.properties, cpu=setup.cpu,
                          memory_mb=setup.memory_mb, smp=setup.smp, maxcpus=setup.maxcpus,
                          devices=setup.devices, guest=golden_boot())
    copy = rundir / f"golden-{build.name}.bin"
    shutil.copyfile(record_stream(build, recipe).path, copy)
    return copy


def save_stream(matrix: Matrix, build_name: str, machine_name: str, out: Path, running: bool) -> Path:
    """Record (or take from the cache) the stream of ``build_name`` on ``machine_name``, with
    the matrix's guest settings and the golden guest running (or a stopped machine)."""
    if build_name not in matrix.builds:
        raise ConfigError(matrix.source, "builds", f"no build {build_name!r}; the matrix has "
                          f"{', '.join(matrix.builds)}")
    build = matrix.builds[build_name].provision()
    machine = introspect(build).machine(machine_name)
    if machine is None:
        raise ConfigError("command line", "MACHINE", f"{build_name} has no machine type {machine_name}")
    props, _ = common_properties(machine, machine, caps=TCG_CAP_SETTINGS, firmware=matrix.guest.firmware,
                                 extra={})
    recipe = StreamRecipe(machine.name, props, cpu=matrix.guest.cpu, memory_mb=matrix.guest.memory_mb,
                          smp=matrix.guest.smp, maxcpus=matrix.guest.maxcpus,
                          devices=matrix.guest.devices, guest=golden_boot() if running else None)
    shutil.copyfile(record_stream(build, recipe).path, out)
    return out
