"""SshHost as a lab host with a filesystem of its own: staged and fetched files,
forwarded unix sockets, remote listening ports and a migration relayed through the harness.

The namespace hosts here share no directory with the harness: their /tmp is
the sandbox's own, so every remote path is reachable only over SSH.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from harness.builds.model import Build
from harness.errors import HostError
from harness.hosts.forward import UnixForward, channel_socket
from harness.hosts.netns import NamespacePair
from harness.hosts.ssh import SshHost, SshProcess
from harness.migration.relay import Relay
from harness.qemu.monitor import Monitor

Leftovers = Callable[[list[str], list[str], list[Path]], list[str]]
REMOTE = "/tmp/gm-lab"
"""A directory in the lab host's own /tmp (not the harness's)."""


def lab_host(pair: NamespacePair, label: str) -> SshHost:
    """A connected host for side ``label`` that shares no directory with the harness."""
    host = SshHost(replace(pair.target(label), shared_writable=None))
    host.connect()
    return host


@pytest.fixture(scope="module")
def pair(trixie_root: Path) -> Iterator[NamespacePair]:
    with NamespacePair(trixie_root) as made:
        yield made


@pytest.fixture(scope="module")
def lab(pair: NamespacePair) -> Iterator[SshHost]:
    with lab_host(pair, "a") as host:
        yield host


def start_qemu(host: SshHost, build: Build, rundir: str, *extra: str) -> tuple[SshProcess, str]:
    """A machine-less QEMU on ``host`` with its QMP socket in ``rundir`` there."""
    qmp = f"{rundir}/q.sock"
    assert host.run_command(["mkdir", "-p", rundir]).returncode == 0
    argv = [build.binary, "-M", "none", "-nodefaults", "-display", "none",
            "-qmp", f"unix:{qmp},server=on,wait=off", *extra]
    return host.spawn(build, argv, writable=[], readable=[], output=Path(f"{rundir}/qemu.log")), qmp


@pytest.fixture(scope="module")
def remote_qemu(lab: SshHost, trixie: Build) -> Iterator[str]:
    """A paused QEMU on the lab host; yields the remote path of its QMP socket."""
    proc, qmp = start_qemu(lab, trixie, f"{REMOTE}/qemu", "-S")
    deadline = time.monotonic() + 10
    while lab.run_command(["test", "-S", qmp]).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, lab.read_file(f"{REMOTE}/qemu/qemu.log")
        time.sleep(0.02)
    yield qmp
    lab.kill(proc)


def recv_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_put_file_and_read_file_round_trip(lab: SshHost, tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: several channel windows
    local = tmp_path / "payload.bin"
    local.write_bytes(content)
    remote = f"{REMOTE}/staged/deep dir/it's $(x).bin"
    lab.put_file(local, remote)
    assert lab.read_file(remote) == content
    assert not Path(remote).exists()  # the host's /tmp is its own
    local.write_bytes(b"second version")
    lab.put_file(local, remote)
    assert lab.read_file(remote) == b"second version"
    listing = lab.run_command(["ls", "-A", f"{REMOTE}/staged/deep dir"]).stdout.split("\n")
    assert listing == ["it's $(x).bin", ""]  # no .part-* file left behind
    assert lab.read_file(f"{REMOTE}/staged/missing") is None


def test_put_file_failure_names_host_and_path(lab: SshHost, tmp_path: Path) -> None:
    local = tmp_path / "x"
    local.write_bytes(b"x" * 300_000)
    with pytest.raises(HostError, match=rf"host {lab.name}: cannot upload .* to /usr/gm-x/f: .*Read-only"):
        lab.put_file(local, "/usr/gm-x/f")
    with pytest.raises(HostError, match=rf"host {lab.name}: cannot read /usr: .*Is a directory"):
        lab.read_file("/usr")


def test_fetch_tree_brings_back_regular_files_only(
    lab: SshHost, remote_qemu: str, tmp_path: Path
) -> None:
    remote_dir = remote_qemu.rsplit("/", 1)[0]
    (tmp_path / "inner").write_bytes(b"inner\0bytes")
    lab.put_file(tmp_path / "inner", f"{remote_dir}/sub/inner.bin")
    assert lab.run_command(["mkfifo", f"{remote_dir}/fifo"]).returncode == 0
    out = tmp_path / "fetched"
    lab.fetch_tree(remote_dir, out)
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert found == ["qemu.log", "sub", "sub/inner.bin"]  # no q.sock, no fifo
    assert (out / "sub/inner.bin").read_bytes() == b"inner\0bytes"
    with pytest.raises(HostError, match=rf"host {lab.name}: cannot fetch {REMOTE}/none into"):
        lab.fetch_tree(f"{REMOTE}/none", out)


def test_qmp_through_a_forwarded_unix_socket(
    lab: SshHost, remote_qemu: str, rundir: Path
) -> None:
    assert not Path(remote_qemu).exists()
    local = rundir / "q.sock"
    with UnixForward(lab, remote_qemu, local):
        for attempt in range(2):  # one connection after the other, each its own channel
            monitor = Monitor(f"lab-qmp{attempt}", local, rundir / f"qmp{attempt}.log")
            monitor.connect(lambda: True, timeout=10)
            try:
                version = monitor.cmd("query-version")
                assert version["qemu"]["major"] >= 10, version
                assert monitor.cmd("query-status")["status"] == "prelaunch"
            finally:
                monitor.close()
    assert not local.exists()


def test_a_forward_to_a_socket_not_there_yet_closes_the_connection(
    lab: SshHost, rundir: Path
) -> None:
    missing = f"{REMOTE}/not-yet.sock"
    with pytest.raises(HostError, match=rf"host {lab.name}: cannot open a channel to unix socket {missing}"):
        lab.open_unix_channel(missing)
    local = rundir / "n.sock"
    with UnixForward(lab, missing, local), socket.socket(socket.AF_UNIX) as client:
        client.connect(str(local))
        assert recv_all(client) == b""  # end of file: the client may retry
    assert lab.alive


def test_a_remote_port_reaches_the_harness(lab: SshHost) -> None:
    listener = lab.listen_remote("127.0.0.1")
    try:
        assert listener.port > 0
        # A process on the host connects to the port: its bytes arrive here.
        script = f"exec 3<>/dev/tcp/127.0.0.1/{listener.port}; printf 'from the host' >&3"
        sent = lab.run_command(["bash", "-c", script])
        assert sent.returncode == 0, sent.stderr
        conn, origin = listener.accept()
        with conn:
            assert recv_all(conn) == b"from the host"
        assert isinstance(origin, tuple) and origin[0] == "127.0.0.1"
        # A direct-tcpip channel to the same port: both directions and the half-closes.
        channel = lab.open_tcp_channel("127.0.0.1", listener.port)
        conn, _ = listener.accept()
        with conn:
            channel.sendall(b"ping")
            channel.shutdown_write()
            assert recv_all(conn) == b"ping"
            conn.sendall(b"pong")
            conn.shutdown(socket.SHUT_WR)
            channel.settimeout(10)
            assert channel.makefile("rb").read() == b"pong"
        channel.close()
    finally:
        listener.close()
    refused = lab.run_command(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{listener.port}"])
    assert refused.returncode != 0 and "refused" in refused.stderr
    listener.close()  # idempotent
    gone = rf"host {lab.name}: cannot open a channel to 127.0.0.1:{listener.port}: Connect failed"
    with pytest.raises(HostError, match=gone):
        lab.open_tcp_channel("127.0.0.1", listener.port)


def test_shutdown_wakes_a_blocked_accept(lab: SshHost) -> None:
    listener = lab.listen_remote("127.0.0.1")
    errors: list[OSError] = []

    def accept() -> None:
        try:
            listener.accept()
        except OSError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=accept)
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()
    listener.shutdown(socket.SHUT_RDWR)
    waiter.join(timeout=2)
    assert not waiter.is_alive()
    assert len(errors) == 1 and f"host {lab.name}" in str(errors[0]) and "shut down" in str(errors[0])
    listener.close()


def splice_threads(timeout: float = 5.0) -> list[str]:
    """Names of splice/forward threads still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (alive := [t.name for t in threading.enumerate()
                     if t.name.startswith(("forward ", "channel "))]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def test_a_broken_end_ends_the_splice_quietly(
    lab: SshHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", raised.append)
    listener = lab.listen_remote("127.0.0.1")
    try:
        # The local end goes away while the remote end is still sending.
        channel = lab.open_tcp_channel("127.0.0.1", listener.port)
        conn, _ = listener.accept()
        conn.close()
        channel.settimeout(10)
        with pytest.raises(OSError):
            for _ in range(1000):
                channel.sendall(b"x" * 65536)
        # The remote end goes away while the local end waits for data.
        channel = lab.open_tcp_channel("127.0.0.1", listener.port)
        conn, _ = listener.accept()
        with conn:
            channel.close()
            assert recv_all(conn) == b""
    finally:
        listener.close()
    assert splice_threads() == []
    assert raised == []


def test_a_migration_relayed_through_the_harness_leaves_nothing(
    trixie: Build, rundir: Path, leftovers: Leftovers
) -> None:
    """Two lab-like hosts: QMP over forwarded sockets, the stream from the source's
    remote port through the harness's Relay (recorded) to the destination."""
    pair = NamespacePair(trixie.root)
    with pair, ExitStack() as stack:
        src, dst = (stack.enter_context(lab_host(pair, label)) for label in ("a", "b"))
        monitors = {}
        for role, host, extra in (("src", src, ["-S"]), ("dst", dst, ["-incoming", "tcp:127.0.0.1:4444"])):
            proc, qmp = start_qemu(host, trixie, f"{REMOTE}/{role}", *extra)
            stack.callback(host.kill, proc)
            stack.enter_context(UnixForward(host, qmp, rundir / f"{role}.sock"))
            monitor = Monitor(role, rundir / f"{role}.sock", rundir / f"{role}-qmp.log")
            monitor.connect(lambda proc=proc: proc.poll() is None, timeout=10)
            stack.callback(monitor.close)
            monitors[role] = monitor
        listener = src.listen_remote("127.0.0.1")
        relay = stack.enter_context(Relay(
            listener,  # type: ignore[arg-type]  # a stand-in for a listening socket
            lambda: channel_socket(dst.open_tcp_channel("127.0.0.1", 4444)),
            "dst 127.0.0.1:4444", rundir / "stream.bin",
        ))
        monitors["src"].cmd("migrate", uri=f"tcp:127.0.0.1:{listener.port}")
        for monitor in monitors.values():
            deadline = time.monotonic() + 20
            while (status := monitor.cmd("query-migrate").get("status")) not in ("completed", "failed"):
                assert time.monotonic() < deadline, status
                time.sleep(0.05)
            assert status == "completed", monitor.cmd("query-migrate")
        assert relay.error is None
        assert relay.forwarded > 0 and (rundir / "stream.bin").stat().st_size == relay.forwarded
    names = [s.netns for s in pair.sides]
    assert pair.workdir is not None
    assert leftovers(names, [str(pair.workdir)], [pair.workdir, rundir / "src.sock"]) == []
    assert splice_threads() == []


def test_operations_need_a_connection(lab: SshHost) -> None:
    host = SshHost(replace(lab.target, name="lab-never"))
    for call in (lambda: host.open_unix_channel("/x"), lambda: host.listen_remote("127.0.0.1"),
                 lambda: host.read_file("/x")):
        with pytest.raises(HostError, match=r"host lab-never: \w+\(\) called in state new"):
            call()
