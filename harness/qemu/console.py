"""The guest's serial console (hvc0) as seen through QEMU's socket chardev.

QEMU itself logs every byte (chardev ``logfile=``); this reader only picks the
agent's lines out of the stream and queues them for whoever waits.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.errors import HarnessError
from harness.guest.protocol import AgentMessage, ProtocolError, parse_line

M = TypeVar("M", bound=AgentMessage)

QUIET_CHECK_S = 5.0
"""While a wait for the guest goes on, how often to ask whether its QEMU is still there."""


class Console:
    """A connection to one QEMU's console socket, parsing agent messages as they arrive."""

    def __init__(self, name: str, socket_path: Path,
                 on_closed: Callable[[], Exception | None] = lambda: None,
                 on_quiet: Callable[[], Exception | None] = lambda: None) -> None:
        """``on_closed`` is asked, when QEMU closes the console while someone waits, and
        ``on_quiet``, when a wait ends without the message, for the error to raise instead of
        returning nothing: a guest that is silent because its QEMU died or hangs is not a
        quiet guest."""
        self.name = name
        self._on_closed = on_closed
        self._on_quiet = on_quiet
        self._path = socket_path
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._messages: list[AgentMessage] = []
        self._pending = b""
        """Bytes after the last newline: the start of a line still being written."""
        self._finishes_for: Console | None = None
        """The console whose unfinished line this one's first line completes (see continue_from)."""
        self.corrupt_lines: list[str] = []
        self.closed_by_peer = False

    def connect(self, alive: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not alive():
                raise HarnessError(f"{self.name}: QEMU exited before its console socket answered")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self._path))
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise HarnessError(f"{self.name}: console {self._path} not ready") from None
                time.sleep(0.02)
                continue
            self._sock = sock
            self._reader = threading.Thread(target=self._read, name=f"{self.name}-console", daemon=True)
            self._reader.start()
            return

    def send(self, data: bytes) -> None:
        if self._sock is None:
            raise HarnessError(f"{self.name}: console used while not connected")
        self._sock.sendall(data)

    def messages(self) -> list[AgentMessage]:
        with self._cond:
            return list(self._messages)

    def wait_for(
        self, kind: type[M], match: Callable[[M], bool], timeout: float
    ) -> M | None:
        """The first queued or future message of ``kind`` satisfying ``match``, or None after
        ``timeout``. When QEMU closed the console, the error ``on_closed`` gives, at once; while
        the guest stays silent, ``on_quiet`` is asked every :data:`QUIET_CHECK_S` and at the end."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            check_at = min(deadline, time.monotonic() + QUIET_CHECK_S)
            with self._cond:
                while True:
                    for message in self._messages[seen:]:
                        if isinstance(message, kind) and match(message):
                            return message
                    seen = len(self._messages)
                    left = check_at - time.monotonic()
                    if self.closed_by_peer or left <= 0:
                        break
                    self._cond.wait(min(left, 0.5))
            error = self._on_closed() if self.closed_by_peer else self._on_quiet()
            if error is not None:
                raise error
            if self.closed_by_peer or time.monotonic() >= deadline:
                return None

    def continue_from(self, source: Console) -> None:
        """Complete the line ``source`` was in the middle of with this console's first bytes: the
        guest's console is one byte stream, which a migration that stops the source while the
        agent writes a line splits between the two QEMUs' consoles. The line is the source's
        message (the guest made it there, before the stop: a tick in it is not a tick of this
        side). Only before this console received anything (a destination paused after the load)."""
        with source._cond:
            tail = source._pending
        with self._cond:
            if self._messages or self.corrupt_lines or self._pending:
                raise HarnessError(f"{self.name}: continue_from {source.name} after output arrived")
            if tail:
                self._pending, self._finishes_for = tail, source

    def wait_for_either(self, other: Console, kind: type[M], match: Callable[[M], bool],
                        timeout: float) -> M | None:
        """The first message of ``kind`` satisfying ``match`` on this console or on ``other`` (a
        source whose last line a destination completed), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in other.messages():
                if isinstance(message, kind) and match(message):
                    return message
            found = self.wait_for(kind, match, min(0.2, max(0.0, deadline - time.monotonic())))
            if found is not None or time.monotonic() >= deadline:
                return found

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _read(self) -> None:
        assert self._sock is not None
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self.closed_by_peer = True
                    self._cond.notify_all()
                return
            with self._cond:
                *lines, self._pending = (self._pending + chunk).split(b"\n")
                finishes = self._finishes_for if lines else None
                if lines:
                    self._finishes_for = None
            for number, raw in enumerate(lines):
                owner = finishes if number == 0 and finishes is not None else self
                owner._take(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _take(self, line: str) -> None:
        try:
            message = parse_line(line)
        except ProtocolError:
            with self._cond:
                self.corrupt_lines.append(line)
            return
        if message is None:
            return
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
