"""How the stream gets from source to destination: a unix socket on this machine, or TCP
across the veth link between two namespace hosts; optionally through the recording relay."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from harness.errors import HarnessError
from harness.hosts.netns import NamespacePair
from harness.migration.relay import Relay


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
