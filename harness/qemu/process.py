"""One QEMU process: started, watched, and always stopped (a context manager)."""

from __future__ import annotations

import enum
import subprocess
from types import TracebackType

from harness.builds.model import Build
from harness.errors import HarnessError, QemuCrashed, QemuStartError
from harness.hosts.base import Host, Process
from harness.hosts.workspace import Workspace
from harness.qemu.argv import SidePaths
from harness.qemu.console import Console
from harness.qemu.monitor import Monitor
from harness.qemu.output import exit_report, start_failure


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class QemuProcess:
    """A QEMU with its QMP monitor and console connected; killed on exit, whatever happens."""

    def __init__(
        self,
        role: str,
        host: Host,
        build: Build,
        argv: list[str],
        paths: SidePaths,
        workspace: Workspace,
    ) -> None:
        """``paths`` are the harness's (local) files; ``argv`` names the host's, as
        ``workspace`` maps them."""
        self.role = role
        self.host = host
        self.build = build
        self.argv = argv
        self.paths = paths
        self.workspace = workspace
        self.state = State.NEW
        self._process: Process | None = None
        self.monitor = Monitor(role, paths.qmp, paths.transcript, on_lost=self._crash)
        self.console = Console(role, paths.console)

    def start(self, timeout: float = 30.0) -> None:
        if self.state is not State.NEW:
            raise HarnessError(f"{self.role}: start() called in state {self.state.value}")
        ws = self.workspace
        self._process = self.host.spawn(
            self.build, self.argv, writable=ws.writable, readable=ws.readable,
            output=ws.path(self.paths.output),
        )
        self.state = State.RUNNING
        try:
            for sock in (self.paths.qmp, self.paths.console):
                ws.reach(sock, self.alive, timeout)
            self.monitor.connect(self.alive, timeout)
            self.console.connect(self.alive, timeout)
        except HarnessError as exc:
            exitcode = self.exitcode  # before stop(): a QEMU that still runs is killed there
            self.stop()
            output = self.output()
            who = f"{self.role} QEMU ({self.build.name})"
            raise QemuStartError(
                start_failure(who, exitcode, str(exc), output), self.argv, exitcode, output
            ) from exc

    def _crash(self) -> QemuCrashed | None:
        """The QMP connection dropped: if QEMU exited (give it a moment), that is the finding."""
        if self._process is None:
            return None
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        return QemuCrashed(exit_report(
            f"{self.role} QEMU ({self.build.name}) exited with code {self.exitcode}", self.output()))

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def exitcode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def output(self) -> str:
        """What QEMU printed on stdout/stderr so far."""
        return self.workspace.read_text(self.paths.output)

    def stop(self) -> None:
        """Kill QEMU and close connections. The guest's state is not needed after a cell."""
        if self.state is State.STOPPED:
            return
        self.monitor.close()
        self.console.close()
        if self._process is not None:
            self.host.kill(self._process)
        self.state = State.STOPPED

    def __enter__(self) -> QemuProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
