"""One QEMU process: started, watched, and always stopped (a context manager).

Also what every side (:class:`harness.runner.side.Side`) does the same way, whoever started
its QEMU: the lifecycle :class:`State` and its start guard, trace events and memory devices
asked over its monitor (:func:`enable_traces`, :func:`lists_memory_device`), and the console's
question for a silent guest (:func:`hang_check`).
"""

from __future__ import annotations

import enum
import signal as signal_module
import subprocess
from types import TracebackType
from typing import Any, Protocol, Self

from harness.builds.model import Build
from harness.errors import HarnessError, QemuCrashed, QemuStartError, QemuUnresponsive
from harness.hosts.base import Host, Process
from harness.hosts.workspace import Workspace
from harness.qemu.argv import SidePaths
from harness.qemu.console import Console
from harness.qemu.machine import Dimm
from harness.qemu.monitor import Monitor
from harness.qemu.output import exit_report, start_failure


def _signal_name(number: int) -> str:
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return "unknown signal"


PING_S = 3.0
"""How long a QEMU may take to answer query-status before a silent guest is blamed on it."""


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def require_new(role: str, state: State) -> None:
    """A side starts once: ``start()`` in any other state than NEW is the harness's error."""
    if state is not State.NEW:
        raise HarnessError(f"{role}: start() called in state {state.value}")


def enable_traces(monitor: Monitor, patterns: tuple[str, ...]) -> None:
    """Turn on QEMU trace events ``patterns`` (trace-event-set-state, one command each)."""
    for name in patterns:
        monitor.cmd("trace-event-set-state", name=name, enable=True)


def lists_memory_device(monitor: Monitor, device_id: str) -> bool:
    """QEMU lists a memory device of id ``device_id`` (query-memory-devices)."""
    return any(d.get("data", {}).get("id") == device_id for d in monitor.cmd("query-memory-devices"))


class Watched(Protocol):
    """What :func:`hang_check` asks of a side."""

    role: str
    build: Build
    state: State
    monitor: Monitor

    def alive(self) -> bool: ...

    def lost(self) -> QemuCrashed | None: ...


def hang_check(side: Watched) -> QemuCrashed | QemuUnresponsive | None:
    """The guest said nothing in time (a console's ``on_quiet``): is its QEMU dead (the side's
    :meth:`~Watched.lost`), or alive but not answering query-status within :data:`PING_S`?"""
    if side.state is not State.RUNNING or not side.monitor.connected:
        return None
    if not side.alive():
        return side.lost()
    try:
        side.monitor.cmd("query-status", timeout=PING_S)
    except QemuUnresponsive as exc:
        return QemuUnresponsive(f"{side.role} QEMU ({side.build.name}) hangs: the guest was "
                                f"silent and {exc}")
    return None


class StoppedOnExit:
    """A side as a context manager: leaving it stops the side, whatever happened."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class QemuProcess(StoppedOnExit):
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
        self.monitor = Monitor(role, paths.qmp, paths.transcript, on_lost=self.lost)
        self.console = Console(role, paths.console, on_closed=self.lost,
                               on_quiet=lambda: hang_check(self))

    def start(self, timeout: float = 30.0) -> None:
        require_new(self.role, self.state)
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

    def lost(self) -> QemuCrashed | None:
        """QMP or the console dropped: if QEMU exited (give it a moment), that is the finding,
        whatever the harness was waiting for."""
        if self._process is None or self.state is State.STOPPED:
            return None
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        return QemuCrashed(exit_report(f"{self.role} QEMU ({self.build.name}) {self.ended()}",
                                       self.output()))

    def trace(self, patterns: tuple[str, ...]) -> None:
        """Turn on QEMU trace events (into its output, kept as evidence)."""
        enable_traces(self.monitor, patterns)

    def plug_dimm(self, dimm: Dimm) -> None:
        """Hotplug ``dimm`` over QMP as libvirt would: its memory backend, then the pc-dimm on it."""
        backend: dict[str, Any] = {"qom-type": "memory-backend-ram", "id": dimm.memdev,
                                   "size": dimm.size_mb << 20}
        self.monitor.cmd("object-add", **backend)
        self.monitor.cmd("device_add", driver="pc-dimm", id=dimm.id, memdev=dimm.memdev)

    def has_dimm(self, dimm: Dimm) -> bool:
        """QEMU lists ``dimm`` among its memory devices (query-memory-devices)."""
        return lists_memory_device(self.monitor, self.dimm_id(dimm))

    def dimm_id(self, dimm: Dimm) -> str:
        """QEMU's id of ``dimm`` on this side."""
        return dimm.id

    def send_signal(self, signum: int) -> None:
        """Signal QEMU's process group (fault injection)."""
        if self._process is not None:
            self.host.signal(self._process, signum)

    def ended(self) -> str:
        """How the process ended: its exit code, or the signal that killed it."""
        code = self.exitcode
        if code is None:
            return "is still running"
        # A remote shell reports a child killed by signal N as 128+N; QEMU itself exits 0 or 1.
        signal = -code if code < 0 else code - 128 if code > 128 else None
        if signal is not None:
            return f"was killed by signal {signal} ({_signal_name(signal)})"
        return f"exited with code {code}"

    def killed(self) -> bool:
        """Ended by a signal (a crash or a kill), not by QEMU's own exit."""
        return self.ended().startswith("was killed")

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
