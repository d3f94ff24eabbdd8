"""How the stream gets from source to destination: a unix socket on this machine, TCP
across the veth link between two namespace hosts, or TCP across the lab network;
optionally through the recording relay."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from harness.errors import HarnessError
from harness.hosts.forward import channel_socket
from harness.hosts.netns import NamespacePair
from harness.hosts.ssh import SshHost
from harness.migration.relay import Relay
from harness.runner.side import Side


class Transport(Protocol):
    """One hop's route. ``incoming`` is for the destination's migrate-incoming."""

    incoming: str

    def route(self, record: Path | None) -> contextlib.AbstractContextManager[tuple[str, Relay | None]]:
        """The URI the source migrates to (and the relay, when recording), for one migration."""
        ...

    def cut(self) -> None:
        """Take the route down in the middle of a migration (fault injection)."""
        ...


class LocalTransport:
    """Unix sockets in the cell's run directory (bound at the same path in every sandbox)."""

    def __init__(self, rundir: Path, dst_role: str) -> None:
        self._socket = rundir / f"{dst_role}.in"
        self._relay_socket = rundir / f"{dst_role}.relay"
        self.incoming = f"unix:{self._socket}"
        self._relay: Relay | None = None

    def cut(self) -> None:
        """Reset the relay's connections; without a relay there is no link to cut here."""
        if self._relay is None:
            raise HarnessError("a local link can only be cut through the recording relay "
                               "(reports.keep_streams must not be none)")
        self._relay.cut()

    @contextlib.contextmanager
    def route(self, record: Path | None) -> Iterator[tuple[str, Relay | None]]:
        if record is None:
            yield self.incoming, None
            return
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self._relay_socket))
        server.listen(1)

        def connect() -> socket.socket:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(self._socket))
            return conn

        try:
            with Relay(server, connect, str(self._socket), record) as relay:
                self._relay = relay
                yield f"unix:{self._relay_socket}", relay
        finally:
            self._relay = None
            self._relay_socket.unlink(missing_ok=True)


# Each pair has namespaces of its own, so fixed ports never collide between cells.
QEMU_PORT = 4444
RELAY_PORT = 4445


class NamespaceTransport:
    """TCP across the veth link into namespace ``label`` of ``pair``.

    Recording puts the relay inside the destination's namespace: the source
    sends across the link to the relay, which hands the stream to QEMU over
    that namespace's loopback.
    """

    def __init__(self, pair: NamespacePair, label: str, record: bool) -> None:
        self._pair = pair
        self._label = label
        self._address = pair.side(label).address
        listen = "127.0.0.1" if record else self._address
        self.incoming = f"tcp:{listen}:{QEMU_PORT}"

    def cut(self) -> None:
        """Take the destination's end of the veth down: packets vanish, no reset is sent."""
        self._pair.set_link(self._label, False)

    @contextlib.contextmanager
    def route(self, record: Path | None) -> Iterator[tuple[str, Relay | None]]:
        if record is None:
            yield self.incoming, None
            return

        def listen() -> socket.socket:
            return socket.create_server((self._address, RELAY_PORT), backlog=1)

        def connect() -> socket.socket:
            conn = socket.create_connection(("127.0.0.1", QEMU_PORT), timeout=10)
            conn.settimeout(None)  # a stream may pause; the migration's own deadline rules
            return conn

        server = self._pair.run_in(self._label, listen)
        target = f"{self._label} 127.0.0.1:{QEMU_PORT}"
        with Relay(server, lambda: self._pair.run_in(self._label, connect), target, record) as relay:
            yield f"tcp:{self._address}:{RELAY_PORT}", relay


class LabTransport:
    """TCP between two lab hosts; recording runs the stream through the harness.

    The destination listens on port 0 (QEMU picks a free port, so parallel
    cells never collide) and reports the port in ``query-migrate``. Unrecorded,
    the source connects to it across the lab network. Recorded, the source
    migrates to a port its own sshd forwards to the harness (a remote port
    forward), and the relay hands the stream to the destination's loopback
    port through a channel of the destination's SSH connection.
    """

    def __init__(
        self, dst: Side, sender: SshHost, receiver: SshHost, address: str, record: bool
    ) -> None:
        self._dst = dst
        self._sender = sender
        self._receiver = receiver
        self._address = address
        self._relay: Relay | None = None
        self.incoming = f"tcp:{'127.0.0.1' if record else address}:0"

    def cut(self) -> None:
        """Reset the relay's connections; the lab network itself is not ours to take down."""
        if self._relay is None:
            raise HarnessError("a lab link can only be cut through the recording relay "
                               "(reports.keep_streams must not be none)")
        self._relay.cut()

    def _listening_port(self) -> int:
        reply = self._dst.monitor.cmd("query-migrate")
        addresses = reply.get("socket-address") or []
        if not addresses:
            raise HarnessError(f"{self._dst.role} QEMU reports no listening socket after "
                               f"migrate-incoming {self.incoming}: {reply}")
        return int(addresses[0]["port"])

    @contextlib.contextmanager
    def route(self, record: Path | None) -> Iterator[tuple[str, Relay | None]]:
        port = self._listening_port()
        if record is None:
            yield f"tcp:{self._address}:{port}", None
            return

        def connect() -> socket.socket:
            return channel_socket(self._receiver.open_tcp_channel("127.0.0.1", port))

        target = f"{self._receiver.name} 127.0.0.1:{port}"
        listener = self._sender.listen_remote("127.0.0.1")
        try:
            with Relay(listener, connect, target, record) as relay:
                self._relay = relay
                yield f"tcp:127.0.0.1:{listener.port}", relay
        finally:
            self._relay = None
            listener.close()
