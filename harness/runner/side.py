"""The side protocol: one role's running guest, as scenarios, steps and checks see it.

The direct driver's :class:`harness.qemu.process.QemuProcess` and the libvirt driver's
:class:`harness.libvirt.side.LibvirtSide` both implement it; scenarios type against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Protocol

from harness.builds.model import Build
from harness.hosts.base import Host
from harness.hosts.workspace import Workspace
from harness.qemu.argv import SidePaths
from harness.qemu.console import Console
from harness.qemu.machine import Dimm
from harness.qemu.monitor import Monitor


class Side(Protocol):
    role: str
    """Its role in the cell (:data:`harness.runner.roles.ROLES`)."""
    host: Host
    build: Build
    paths: SidePaths
    """The harness's (local) files of this side."""
    workspace: Workspace
    argv: list[str]
    """The command line the harness started QEMU with; empty when a daemon started it."""
    monitor: Monitor
    """QMP, or what stands for it (libvirt's API for what libvirt owns)."""
    console: Console
    """The guest agent's serial line."""

    def start(self, timeout: float = 30.0) -> None:
        """Start the guest paused (the source); destinations are made by the migration."""
        ...

    def alive(self) -> bool: ...

    @property
    def exitcode(self) -> int | None: ...

    def ended(self) -> str:
        """How it ended, in words for a failure message."""
        ...

    def killed(self) -> bool:
        """Ended by a crash or a kill, not by QEMU's own exit."""
        ...

    def output(self) -> str:
        """What QEMU printed so far."""
        ...

    def trace(self, patterns: tuple[str, ...]) -> None: ...

    def plug_dimm(self, dimm: Dimm) -> None: ...

    def has_dimm(self, dimm: Dimm) -> bool: ...

    def dimm_id(self, dimm: Dimm) -> str:
        """QEMU's id of ``dimm`` on this side."""
        ...

    def send_signal(self, signum: int) -> None:
        """Signal QEMU (fault injection); a side that cannot says so with a HarnessError."""
        ...

    def stop(self) -> None:
        """Stop the guest and close its connections; the guest's state is not needed after."""
        ...

    def __enter__(self) -> Side: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def accel_of(side: Side) -> str:
    """The accelerator ``side``'s QEMU runs the guest with (its ``-accel``; ``tcg`` without one)."""
    argv = side.argv
    return argv[argv.index("-accel") + 1] if "-accel" in argv[:-1] else "tcg"


def stop_all(sides: Sequence[Side]) -> None:
    """Stop every side at once: each stop waits for its QEMU to be gone, a round trip to its
    host (about 0.13 s over SSH), so one after another they add up. A side's error is raised
    once all have been stopped."""
    if not sides:
        return
    for side in sides:  # here: qemu.qmp's connection belongs to the thread that opened it
        side.monitor.close()
    with ThreadPoolExecutor(max_workers=len(sides), thread_name_prefix="stop") as pool:
        stopping = [pool.submit(side.stop) for side in sides]
    for stopped in stopping:
        stopped.result()
