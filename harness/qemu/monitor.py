"""A QMP monitor on top of ``qemu.qmp``'s sync shim that keeps a transcript.

Every command, reply and event goes to a transcript file (attached to the
cell's report), and, abridged, to the ``goldmig.qmp`` logger at DEBUG (the cell's
``harness.log``, :mod:`harness.runner.celllog`): each command with its arguments, then how
it was answered (ok, the error class, no answer, connection lost) and how long that
took; each event. Events are queued by qemu.qmp from the moment of connection,
so waiting for one after issuing the command that triggers it cannot miss it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, StateError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.errors import HarnessError, QemuUnresponsive, QmpCommandError
from harness.runner.celllog import abridged

log = logging.getLogger("goldmig.qmp")


class Monitor:
    """One QMP connection to one QEMU process.

    ``on_lost`` is asked for the error to raise when the connection drops in
    the middle of a command (typically: the process died, a product failure);
    without one, or when it returns None, a :class:`HarnessError` is raised.
    """

    def __init__(
        self, name: str, socket_path: Path, transcript: Path,
        on_lost: Callable[[], Exception | None] = lambda: None,
    ) -> None:
        self.name = name
        self._on_lost = on_lost
        self._path = socket_path
        self._transcript = transcript
        self._qmp: QEMUMonitorProtocol | None = None
        self._t0 = time.monotonic()
        self._backlog: list[dict[str, Any]] = []
        self._sent: tuple[str, float] = ("", self._t0)
        """The last command written to the transcript, and when (for its answer's log line)."""

    def connect(self, alive: Callable[[], bool], timeout: float) -> None:
        """Connect once QEMU listens; give up early if ``alive()`` turns false."""
        deadline = time.monotonic() + timeout
        while True:
            if not alive():
                raise HarnessError(f"{self.name}: QEMU exited before its QMP socket answered")
            if self._path.exists():
                qmp = QEMUMonitorProtocol(str(self._path), nickname=self.name)
                try:
                    greeting = qmp.connect()
                except (ConnectError, OSError):
                    qmp.close()
                else:
                    self._qmp = qmp
                    self._log("greeting", greeting)
                    return
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name}: QMP socket {self._path} not ready in {timeout}s")
            time.sleep(0.02)

    @property
    def connected(self) -> bool:
        return self._qmp is not None

    def cmd(self, command: str, timeout: float = 30.0, **args: Any) -> Any:
        """Execute ``command``; raise :class:`QmpCommandError` on an error reply."""
        qmp = self._require()
        self._log("->", {"execute": command, "arguments": args})
        qmp.settimeout(timeout)
        try:
            result = qmp.cmd(command, **args)
        except ExecuteError as exc:
            error = exc.error.error
            self._log("<-", {"error": {"class": error.class_, "desc": error.desc}})
            raise QmpCommandError(self.name, command, args, error.class_, error.desc) from exc
        except TimeoutError as exc:
            self._log("<-", {"timeout": timeout})
            raise QemuUnresponsive(
                f"{self.name} QEMU did not answer QMP {command} {json.dumps(args)} within "
                f"{timeout}s (the process is alive but its monitor hangs)") from exc
        except (ExecInterruptedError, StateError, ConnectionError, EOFError) as exc:
            self._log("<-", {"disconnected": str(exc)})
            raise (self._on_lost() or HarnessError(
                f"{self.name}: QMP connection lost during {command}: {exc}")) from exc
        self._log("<-", {"return": result})
        return result

    def events(self) -> list[dict[str, Any]]:
        """Events received so far and not yet taken."""
        qmp = self._require()
        events = self._backlog
        self._backlog = []
        while (event := qmp.pull_event(wait=False)) is not None:
            self._log("event", event)
            events.append(event)
        return events

    def wait_event(
        self, match: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any] | None:
        """The first event for which ``match`` holds, or None after ``timeout`` seconds.

        Events that do not match stay queued for the next call.
        """
        qmp = self._require()
        deadline = time.monotonic() + timeout
        kept: list[dict[str, Any]] = []
        try:
            for event in self.events():
                if match(event):
                    return event
                kept.append(event)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    pulled = qmp.pull_event(wait=min(left, 0.5))
                except TimeoutError:
                    continue
                if pulled is None:
                    continue
                self._log("event", pulled)
                if match(pulled):
                    return pulled
                kept.append(pulled)
            return None
        finally:
            self._backlog = kept + self._backlog

    def close(self) -> None:
        if self._qmp is not None:
            # qemu.qmp re-raises the reason a dead connection died; closing must
            # not mask the cell's own error with it.
            with contextlib.suppress(Exception):
                self._qmp.close()
            self._qmp = None

    def _require(self) -> QEMUMonitorProtocol:
        if self._qmp is None:
            raise HarnessError(f"{self.name}: QMP used while not connected")
        return self._qmp

    def _log(self, kind: str, payload: Any) -> None:
        stamp = time.monotonic() - self._t0
        self._log_line(kind, payload)
        with open(self._transcript, "a") as out:
            out.write(f"{stamp:9.3f} {self.name} {kind} {json.dumps(payload, default=str)}\n")

    def _log_line(self, kind: str, payload: Any) -> None:
        """A transcript entry as a ``goldmig.qmp`` DEBUG line (:func:`qmp_line`); a command's
        answer says how long it took since the command was sent."""
        now = time.monotonic()
        if kind == "->" and isinstance(payload, dict):
            self._sent = (str(payload.get("execute", payload.get("libvirt", "?"))), now)
        if log.isEnabledFor(logging.DEBUG):
            command, sent = self._sent
            log.debug("%s", qmp_line(self.name, kind, payload, command, (now - sent) * 1000))


def qmp_line(role: str, kind: str, payload: Any, command: str = "", took_ms: float = 0.0) -> str:
    """One transcript entry as a log line, abridged (:data:`harness.runner.celllog.ABRIDGE_CHARS`):

    ``src -> migrate {"uri": "unix:/tmp/gm-run-1-x/dst.in"}``,
    ``src <- migrate: ok in 1.4 ms: {}``, ``src <- device_add: error GenericError in 0.9 ms:
    Duplicate ID 'cpu1'``, ``src event MIGRATION {"status": "active"}``. ``command`` and
    ``took_ms`` are those of the command an answer (``<-``) answers."""
    if not isinstance(payload, dict):
        return f"{role} {kind} {abridged(payload)}"
    if kind == "->":
        name = payload.get("execute", payload.get("libvirt", "?"))
        return f"{role} -> {name} {abridged(payload.get('arguments', {}))}"
    if kind == "event":
        return f"{role} event {payload.get('event', '?')} {abridged(payload.get('data', {}))}"
    if kind != "<-":
        return f"{role} {kind} {abridged(payload)}"
    if "return" in payload:
        said, detail = "ok", abridged(payload["return"])
    elif isinstance(payload.get("error"), dict):
        error = payload["error"]
        said, detail = f"error {error.get('class', '?')}", abridged(str(error.get("desc", "")))
    elif "libvirt-error" in payload:
        said, detail = "libvirt error", abridged(str(payload["libvirt-error"]))
    elif "timeout" in payload:
        said, detail = "no answer", f"timed out after {payload['timeout']} s"
    elif "disconnected" in payload:
        said, detail = "connection lost", abridged(str(payload["disconnected"]))
    else:
        said, detail = "answered", abridged(payload)
    return f"{role} <- {command}: {said} in {took_ms:.1f} ms: {detail}"
