"""The stream between two nested hosts: TCP across their private link, or, recorded, through
the relay here over the L0s' user networks (plain TCP: an SSH forward would encrypt it in an
emulated L1, at about 4 MB/s)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError
from harness.migration.relay import Relay
from harness.nested.pair import CONTROL_NET, L1, MIGRATION_PORT


class NestedTransport:
    """Into L1 ``dst``: its QEMU listens on :data:`MIGRATION_PORT`. Unrecorded, the source
    sends across the link; recorded, to the relay (the L0's host address inside the source
    L1 is this machine's loopback), which hands the stream to the destination's L0 forward."""

    def __init__(self, dst: L1, record: bool) -> None:
        self._dst = dst
        self._relay: Relay | None = None
        listen = f"{CONTROL_NET}.15" if record else dst.link_address
        self.incoming = f"tcp:{listen}:{MIGRATION_PORT}"

    def cut(self) -> None:
        """Reset the relay's connections (the link between the L0s is not cut yet)."""
        if self._relay is None:
            raise HarnessError("a nested link can only be cut through the recording relay "
                               "(reports.keep_streams must not be none)")
        self._relay.cut()

    @contextlib.contextmanager
    def route(self, record: Path | None) -> Iterator[tuple[str, Relay | None]]:
        if record is None:
            yield f"tcp:{self._dst.link_address}:{MIGRATION_PORT}", None
            return

        def connect() -> socket.socket:
            conn = socket.create_connection(("127.0.0.1", self._dst.migration_port), timeout=10)
            conn.settimeout(None)  # a stream may pause; the migration's own deadline rules
            return conn

        server = socket.create_server(("127.0.0.1", 0), backlog=1)
        port = server.getsockname()[1]
        target = f"{self._dst.name} {CONTROL_NET}.15:{MIGRATION_PORT}"
        try:
            with Relay(server, connect, target, record) as relay:
                self._relay = relay
                yield f"tcp:{CONTROL_NET}.2:{port}", relay
        finally:
            self._relay = None
            server.close()
