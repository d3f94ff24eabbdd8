"""The recording relay behind a local transport: forwards both ways, records exactly what it
forwarded, and can cut the link."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from harness.migration.transport import LocalTransport


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
    dest = _destination(tmp_path / "dst.in", received, b"ack")
    with (
        LocalTransport(tmp_path, "dst").route(tmp_path / "stream.bin") as (uri, relay),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as src,
    ):
        assert relay is not None and uri == f"unix:{tmp_path / 'dst.relay'}"
        src.connect(uri.removeprefix("unix:"))
        src.sendall(payload)
        src.shutdown(socket.SHUT_WR)
        assert src.recv(3) == b"ack"
        dest.join(timeout=10)
    assert bytes(received) == payload
    assert (tmp_path / "stream.bin").read_bytes() == payload
    assert relay.forwarded == len(payload) and relay.returned == 3
    assert relay.error is None
    assert not (tmp_path / "dst.relay").exists()


def test_unreachable_destination_is_reported(tmp_path: Path) -> None:
    with (
        LocalTransport(tmp_path, "dst").route(tmp_path / "stream.bin") as (uri, relay),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as src,
    ):
        src.connect(uri.removeprefix("unix:"))
        assert src.recv(1) == b""  # the relay hangs up
    assert relay is not None and relay.error is not None
    assert "could not reach the destination" in relay.error


def test_cut_breaks_the_link_mid_stream(tmp_path: Path) -> None:
    received = bytearray()
    _destination(tmp_path / "dst.in", received, b"")
    with LocalTransport(tmp_path, "dst").route(tmp_path / "stream.bin") as (uri, relay):
        assert relay is not None
        src = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        src.connect(uri.removeprefix("unix:"))
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
    with LocalTransport(tmp_path, "dst").route(tmp_path / "stream.bin") as (_, relay):
        assert relay is not None
    assert relay.forwarded == 0


def test_without_recording_the_source_goes_straight_to_the_destination(tmp_path: Path) -> None:
    transport = LocalTransport(tmp_path, "dst")
    with transport.route(None) as (uri, relay):
        assert relay is None and uri == transport.incoming == f"unix:{tmp_path / 'dst.in'}"
