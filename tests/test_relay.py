"""The recording relay: forwards both ways, records exactly what it forwarded, and can cut the link."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from harness.migration.relay import Relay


def _destination(path: Path, received: bytearray, reply: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            conn.sendall(reply)  # the return path
            while chunk := conn.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_forwards_and_records_every_byte(tmp_path: Path) -> None:
    payload = os.urandom(5 * 1024 * 1024 + 17)
    received = bytearray()
    dest = _destination(tmp_path / "in.sock", received, b"ack")
    with (
        Relay(tmp_path / "relay.sock", tmp_path / "in.sock", tmp_path / "stream.bin") as relay,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as src,
    ):
        src.connect(str(relay.listen))
        src.sendall(payload)
        src.shutdown(socket.SHUT_WR)
        assert src.recv(3) == b"ack"
        dest.join(timeout=10)
    assert bytes(received) == payload
    assert (tmp_path / "stream.bin").read_bytes() == payload
    assert relay.forwarded == len(payload) and relay.returned == 3
    assert relay.error is None
    assert not (tmp_path / "relay.sock").exists()


def test_unreachable_destination_is_reported(tmp_path: Path) -> None:
    with (
        Relay(tmp_path / "relay.sock", tmp_path / "nobody.sock", None) as relay,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as src,
    ):
        src.connect(str(relay.listen))
        assert src.recv(1) == b""  # the relay hangs up
    assert relay.error is not None and "could not reach the destination" in relay.error


def test_cut_breaks_the_link_mid_stream(tmp_path: Path) -> None:
    received = bytearray()
    _destination(tmp_path / "in.sock", received, b"")
    with Relay(tmp_path / "relay.sock", tmp_path / "in.sock", None) as relay:
        src = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        src.connect(str(relay.listen))
        src.sendall(b"x" * 65536)
        while relay.forwarded == 0:
            time.sleep(0.01)
        relay.cut()
        try:
            for _ in range(200):
                src.sendall(b"x" * 65536)
            broke = False
        except OSError:
            broke = True
        src.close()
    assert broke, "the source kept writing into a cut link"


def test_close_without_a_connection_returns(tmp_path: Path) -> None:
    relay = Relay(tmp_path / "relay.sock", tmp_path / "in.sock", None)
    relay.close()
    assert relay.forwarded == 0
