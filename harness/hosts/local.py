"""The embedded default host: QEMU processes on this machine.

A build with a root filesystem of its own (a Debian suite) runs inside a
read-only view of that root with bubblewrap (:mod:`harness.hosts.sandbox`);
the run and guest directories are bound at the same paths inside, so sockets
and files need no path translation. bwrap's mount namespace dies with the
process, so nothing stays mounted after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness.builds.model import Build
from harness.errors import HostError
from harness.hosts.base import Process
from harness.hosts.sandbox import root_view

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child: SIGKILL it if the harness dies, so no QEMU outlives a run."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalHost:
    """Runs processes on this machine, each in a process group of its own."""

    def __init__(self, name: str = "local") -> None:
        self.name = name

    def command(
        self, build: Build, argv: Sequence[str], writable: Sequence[Path], readable: Sequence[Path]
    ) -> list[str]:
        """The full command line: ``argv`` as is, or wrapped in bwrap for a rooted build."""
        if not build.has_own_root:
            return list(argv)
        view = root_view(build.root, writable, readable)
        return ["bwrap", *view, "--die-with-parent", "--", *argv]

    def spawn(
        self,
        build: Build,
        argv: Sequence[str],
        *,
        writable: Sequence[Path],
        readable: Sequence[Path],
        output: Path,
    ) -> Process:
        cmd = self.command(build, argv, writable, readable)
        with open(output, "ab") as out:
            try:
                return subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise HostError(f"host {self.name}: cannot run {cmd[0]}: {exc}") from exc

    def run(
        self, build: Build, argv: Sequence[str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command of the build to completion (introspection)."""
        cmd = self.command(build, argv, [], [])
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostError(f"host {self.name}: {' '.join(cmd)}: {exc}") from exc

    def kill(self, process: Process) -> None:
        """SIGKILL the process's whole group and return once every member has exited (a rooted
        build's QEMU is bwrap's child: it is still tearing down its guest RAM when bwrap is
        reaped)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + KILL_WAIT_S
        while (left := _group_members(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        if left:
            raise HostError(f"host {self.name}: pids {left} of process group {process.pid} still "
                            f"alive {KILL_WAIT_S:.0f} s after SIGKILL")

    def signal(self, process: Process, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


KILL_WAIT_S = 10.0
"""How long a killed process group may take to exit (a QEMU unmapping its guest RAM)."""


def _group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that have not exited (zombies excluded)."""
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(pid))
    return members
