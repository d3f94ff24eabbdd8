"""Splicing SSH channels with local sockets: forwarded unix sockets and remote listening ports.

A host with a filesystem of its own keeps QEMU's QMP and console sockets on
its side; :class:`UnixForward` makes each one connectable at a local path
(one channel per accepted connection, as ``ssh -L local.sock:remote.sock``).
:class:`RemoteListener` is the other way round: a port the host listens on
for the harness (``ssh -R``), usable wherever a listening socket is expected,
e.g. by :class:`~harness.migration.relay.Relay`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import paramiko

from harness.errors import HostError

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost

_CHUNK = 65536
_JOIN_TIMEOUT = 5.0
_ERRORS = (OSError, EOFError, paramiko.SSHException)


class _Splice:
    """The two directions of one splice; the last one to finish closes both ends."""

    def __init__(self, channel: paramiko.Channel, sock: socket.socket) -> None:
        self._channel = channel
        self._sock = sock
        self._lock = threading.Lock()
        self._running = 2

    def pump(
        self, recv: Callable[[int], bytes], send: Callable[[bytes], object], eof: Callable[[], None]
    ) -> None:
        try:
            while chunk := recv(_CHUNK):
                send(chunk)
            eof()
        except _ERRORS:
            self._abort()
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                self._channel.close()
                self._sock.close()

    def eof_to_sock(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def _abort(self) -> None:
        """One end broke: end the other direction too (its recv returns b"")."""
        self._channel.close()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)


def splice(channel: paramiko.Channel, sock: socket.socket, name: str) -> list[threading.Thread]:
    """Copy bytes both ways between ``channel`` and ``sock`` in two daemon threads.

    End of file in one direction is passed on as a half-close, so a peer that
    still answers after its input ended gets its answer through; an error in
    either direction shuts both down. Both ends are closed when both directions are done.
    """
    ends = _Splice(channel, sock)
    directions = (
        (f"{name} <-", channel.recv, sock.sendall, ends.eof_to_sock),
        (f"{name} ->", sock.recv, channel.sendall, channel.shutdown_write),
    )
    threads = [
        threading.Thread(target=ends.pump, args=(recv, send, eof), name=label, daemon=True)
        for label, recv, send, eof in directions
    ]
    for thread in threads:
        thread.start()
    return threads


def channel_socket(channel: paramiko.Channel) -> socket.socket:
    """A real socket carrying ``channel`` (one end of a socketpair spliced with it).

    Closing the returned socket ends the splice once the remote end closes too.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    splice(channel, ours, f"channel {channel.get_id()}")
    return theirs


class UnixForward:
    """Connections to ``local_path`` are relayed to the unix socket ``remote_path`` on ``host``.

    Each accepted connection gets a channel of its own; if the channel cannot
    be opened (the socket is not there yet), the connection is closed and the
    client, seeing end of file, may retry.
    """

    def __init__(self, host: SshHost, remote_path: str, local_path: Path) -> None:
        self.host = host
        self.remote_path = remote_path
        self.local_path = local_path
        self._lock = threading.Lock()
        self._closed = False
        self._live: list[tuple[paramiko.Channel, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(local_path).st_mode):
                local_path.unlink()  # a stale socket: nobody can be listening on it any more
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._server.bind(str(local_path))
            self._server.listen(16)
        except OSError as exc:
            self._server.close()
            raise HostError(
                f"host {host.name}: cannot listen at {local_path} to forward {remote_path}: {exc}"
            ) from exc
        self._acceptor = threading.Thread(
            target=self._serve, name=f"forward {local_path}", daemon=True
        )
        self._acceptor.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                channel = self.host.open_unix_channel(self.remote_path)
            except HostError:
                conn.close()
                continue
            with self._lock:
                if self._closed:
                    channel.close()
                    conn.close()
                    return
                self._live = [(c, s) for c, s in self._live if not c.closed]
                self._threads = [t for t in self._threads if t.is_alive()]
                self._live.append((channel, conn))
                self._threads += splice(channel, conn, f"forward {self.local_path}")

    def close(self) -> None:
        """Stop accepting, end every live connection and wait for the threads."""
        with self._lock:
            self._closed = True
            live, threads = list(self._live), list(self._threads)
        with contextlib.suppress(OSError):  # shutdown wakes a pending accept(); close() alone does not
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self.local_path.unlink(missing_ok=True)
        for channel, conn in live:
            channel.close()
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in (self._acceptor, *threads):
            thread.join(timeout=_JOIN_TIMEOUT)
            if thread.is_alive():
                raise HostError(
                    f"host {self.host.name}: forward {self.local_path} -> {self.remote_path}: "
                    f"thread {thread.name!r} did not stop in {_JOIN_TIMEOUT}s"
                )

    def __enter__(self) -> UnixForward:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RemoteListener:
    """A port the host listens on (``tcpip-forward``); each connection to it becomes a local socket.

    It stands in for a listening socket: :meth:`accept`, :meth:`shutdown` and
    :meth:`close`, which is all :class:`~harness.migration.relay.Relay` uses.
    Made by :meth:`~harness.hosts.ssh.SshHost.listen_remote`, which hands it
    the connections for its port (:meth:`deliver`) and is told by ``forget``
    when to stop.
    """

    def __init__(
        self, host: str, transport: paramiko.Transport, address: str, port: int,
        forget: Callable[[], object],
    ) -> None:
        self.host = host
        self.address = address
        self.port = port
        self._transport = transport
        self._forget = forget
        self._lock = threading.Lock()
        self._incoming: queue.SimpleQueue[tuple[paramiko.Channel, object] | None] = queue.SimpleQueue()
        self._shut = False
        self._closed = False

    def deliver(self, channel: paramiko.Channel, origin: object) -> None:
        """Queue a forwarded connection (called from paramiko's transport thread)."""
        with self._lock:
            if self._closed:
                channel.close()
            else:
                self._incoming.put((channel, origin))

    def accept(self) -> tuple[socket.socket, object]:
        """Wait for a connection: a local socket spliced with it, and its origin (address, port).

        Raises OSError once :meth:`shutdown` is called or the SSH connection is lost.
        """
        while not self._shut:
            try:
                item = self._incoming.get(timeout=0.5)
            except queue.Empty:
                if not self._transport.is_active():
                    raise OSError(
                        f"host {self.host}: connection lost while listening on "
                        f"{self.address}:{self.port}"
                    ) from None
                continue
            if item is not None:
                channel, origin = item
                return channel_socket(channel), origin
        raise OSError(f"host {self.host}: listener on {self.address}:{self.port} is shut down")

    def shutdown(self, how: int) -> None:
        """Wake a blocked :meth:`accept` (``how`` is accepted for socket compatibility)."""
        self._shut = True
        self._incoming.put(None)

    def close(self) -> None:
        """Cancel the forward on the host; connections not accepted yet are closed.

        Sends ``cancel-tcpip-forward`` itself: paramiko's ``cancel_port_forward``
        also drops the handler of every other forward on the same connection.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.shutdown(socket.SHUT_RDWR)
        self._forget()
        while not self._incoming.empty():
            if (item := self._incoming.get()) is not None:
                item[0].close()
        if not self._transport.is_active():
            return  # the forward ended with the connection
        try:
            reply = self._transport.global_request(
                "cancel-tcpip-forward", (self.address, self.port), wait=True
            )
        except _ERRORS:
            reply = None
        if reply is None and self._transport.is_active():  # otherwise it went with the connection
            raise HostError(
                f"host {self.host}: could not cancel the forward of {self.address}:{self.port}"
            )
