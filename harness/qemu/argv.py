"""The QEMU command line for one side of a migration (a list, never a shell string)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.builds.model import Build
from harness.qemu.machine import MachineSetup


@dataclass(frozen=True)
class SidePaths:
    """The files of one QEMU process inside the cell's run directory."""

    qmp: Path
    console: Path
    serial_log: Path
    output: Path
    transcript: Path

    @classmethod
    def for_role(cls, rundir: Path, role: str) -> SidePaths:
        return cls(
            qmp=rundir / f"{role}.qmp",
            console=rundir / f"{role}.con",
            serial_log=rundir / f"{role}-serial.log",
            output=rundir / f"{role}-qemu.log",
            transcript=rundir / f"{role}-qmp.log",
        )


def qemu_argv(build: Build, setup: MachineSetup, paths: SidePaths, *, incoming: bool) -> list[str]:
    """The source starts paused (-S) so its console is connected before the guest prints;
    the destination waits for ``migrate-incoming`` and, also started with -S, stays paused
    once the stream is loaded, so its machine state can be read as loaded before anything
    runs (:func:`harness.migration.run.migrate` then resumes it)."""
    argv = [build.binary]
    if build.firmware_dir:
        argv += ["-L", build.firmware_dir]
    argv += [
        "-accel", setup.accel,
        "-M", setup.machine_arg(),
        "-cpu", setup.cpu,
        "-m", setup.memory_arg(),
        "-smp", f"{setup.smp},maxcpus={setup.maxcpus}",
        "-nodefaults", "-display", "none",
        "-kernel", str(setup.kernel),
        "-initrd", str(setup.initrd),
        "-append", setup.append,
        "-qmp", f"unix:{paths.qmp},server=on,wait=off",
        "-chardev",
        f"socket,id=console0,path={paths.console},server=on,wait=off,logfile={paths.serial_log}",
        "-serial", "chardev:console0",
    ]
    for device in setup.devices:
        argv += ["-device", device]
    for dimm in setup.dimms:
        argv += ["-object", dimm.object_arg(), "-device", dimm.device_arg()]
    argv += ["-incoming", "defer", "-S"] if incoming else ["-S"]
    return argv
