"""A byte relay between source and destination that records the stream.

The source migrates to the relay's socket; the relay connects to the
destination's incoming socket and copies bytes both ways (the return path
too), writing the source-to-destination direction to a file as it forwards.
It is also where a link fault is injected (:meth:`Relay.cut`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol

from harness.errors import HarnessError

_CHUNK = 1 << 20


class Listener(Protocol):
    """What the relay needs of its server: a listening socket, or an SSH remote forward."""

    def accept(self) -> tuple[socket.socket, object]: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


class Relay:
    """Accepts one connection on ``server`` (bound and listening) and forwards it to ``connect()``.

    Sockets are made by the caller, so the relay works for unix sockets on
    this machine, TCP sockets made inside a network namespace, and SSH
    forwards to lab hosts alike.
    """

    def __init__(
        self, server: Listener, connect: Callable[[], socket.socket], target: str,
        record: Path | None,
    ) -> None:
        self.target = target
        self.record = record
        self.forwarded = 0
        self.returned = 0
        self.error: str | None = None
        self._connect = connect
        self._server = server
        self._conns: list[socket.socket] = []
        self._cut = threading.Event()
        self._threads: list[threading.Thread] = []
        self._main = threading.Thread(target=self._serve, name="relay", daemon=True)
        self._main.start()

    def _serve(self) -> None:
        try:
            src, _ = self._server.accept()
        except OSError:
            return  # closed before the source connected
        try:
            dst = self._connect()
        except OSError as exc:
            self.error = f"relay could not reach the destination at {self.target}: {exc}"
            src.close()
            return
        self._conns = [src, dst]
        if self._cut.is_set():
            self.cut()
        back = threading.Thread(target=self._copy_back, args=(dst, src), name="relay-back", daemon=True)
        back.start()
        self._threads.append(back)
        self._copy_forward(src, dst)

    def _copy_forward(self, src: socket.socket, dst: socket.socket) -> None:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        with open(self.record, "wb") if self.record else contextlib.nullcontext() as out:
            try:
                while (n := src.recv_into(buf)) > 0:
                    dst.sendall(view[:n])
                    if out:
                        out.write(view[:n])
                    self.forwarded += n
                dst.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self.error = f"relay forward direction broke after {self.forwarded} bytes: {exc}"

    def _copy_back(self, dst: socket.socket, src: socket.socket) -> None:
        try:
            while chunk := dst.recv(65536):
                src.sendall(chunk)
                self.returned += len(chunk)
            src.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the forward direction reports; the return path is optional for QEMU

    def cut(self) -> None:
        """Take the link down: both connections reset, as a pulled cable would."""
        self._cut.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # shutdown wakes a pending accept(); close() alone does not
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self.cut()
        for conn in self._conns:
            conn.close()
        self._join(self._main)
        for thread in self._threads:  # complete now: only the main thread adds to it
            self._join(thread)

    @staticmethod
    def _join(thread: threading.Thread) -> None:
        thread.join(timeout=5)
        if thread.is_alive():
            raise HarnessError(f"relay thread {thread.name} did not stop")

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
