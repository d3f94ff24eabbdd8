"""NamespacePair: real namespaces, veth link, sshd per side, teardown and the stale sweeper."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.builds.model import Build
from harness.errors import HostError
from harness.hosts import netns
from harness.hosts.netns import SUPERNET, NamespacePair, sweep_stale
from harness.hosts.setns import ip, list_namespaces, netns_pids
from harness.paths import REPO_ROOT

Leftovers = Callable[[list[str], list[str], list[Path]], list[str]]


def pair_traces(pair: NamespacePair) -> tuple[list[str], list[str], list[Path]]:
    """What a pair must not leave behind: its namespace names, command-line needles, temp dir."""
    assert pair.workdir is not None
    return [s.netns for s in pair.sides], [str(pair.workdir)], [pair.workdir]


class TestPair:
    def test_two_pairs_get_distinct_names_and_subnets(
        self, trixie_root: Path, leftovers: Leftovers
    ) -> None:
        with NamespacePair(trixie_root) as one, NamespacePair(trixie_root) as two:
            traces = [pair_traces(one), pair_traces(two)]
            nets = set()
            for pair in (one, two):
                a, b = (ipaddress.IPv4Address(s.address) for s in pair.sides)
                net = ipaddress.IPv4Network(f"{a}/30", strict=False)
                assert b in net and net.subnet_of(SUPERNET)
                assert pair.a.netns.startswith(f"gm-{os.getpid()}-")
                assert pair.a.netns.endswith("-a") and pair.b.netns.endswith("-b")
                nets.add(net)
            assert len(nets) == 2
            assert {one.a.netns, one.b.netns}.isdisjoint({two.a.netns, two.b.netns})
        for names, needles, gone in traces:
            assert leftovers(names, needles, gone) == []

    def test_tcp_crosses_the_link(self, trixie_root: Path) -> None:
        with NamespacePair(trixie_root) as pair:
            server = pair.run_in("b", lambda: socket.create_server((pair.b.address, 0)))
            port = server.getsockname()[1]
            client = pair.run_in("a", lambda: socket.create_connection((pair.b.address, port), 5))
            conn, peer = server.accept()
            client.sendall(b"over the veth")
            assert conn.recv(64) == b"over the veth"
            assert peer[0] == pair.a.address
            assert pair.link_up("a") and pair.link_up("b")
            for sock in (client, conn, server):
                sock.close()

    def test_link_down_mid_transfer_is_detected(self, trixie_root: Path) -> None:
        with NamespacePair(trixie_root) as pair:
            server = pair.run_in("b", lambda: socket.create_server((pair.b.address, 0)))
            port = server.getsockname()[1]

            def dial() -> socket.socket:
                sock = socket.create_connection((pair.b.address, port), timeout=5)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1000)
                return sock

            sender = pair.run_in("a", dial)
            receiver, _ = server.accept()
            received = [0]

            def drain() -> None:
                with contextlib.suppress(OSError):
                    while chunk := receiver.recv(1 << 16):
                        received[0] += len(chunk)

            drainer = threading.Thread(target=drain, daemon=True)
            drainer.start()
            sender.settimeout(None)
            chunk = b"\xa5" * (1 << 16)
            while received[0] < 8 << 20:
                sender.sendall(chunk)
            pair.set_link("a", up=False)
            down = time.monotonic()
            assert not pair.link_up("a") and not pair.link_up("b")
            with pytest.raises(OSError) as caught:
                while time.monotonic() - down < 15:
                    sender.sendall(chunk)
            detected = time.monotonic() - down
            assert isinstance(caught.value, TimeoutError), caught.value
            assert detected < 5, f"link loss noticed only after {detected:.1f}s"
            # The control path (harness -> sshd on its own side) does not cross the link.
            assert pair.host("a").run_command(["true"]).returncode == 0
            pair.set_link("a", up=True)
            again = pair.run_in("a", dial)
            conn, _ = server.accept()
            again.sendall(b"back")
            assert conn.recv(8) == b"back"
            receiver.shutdown(socket.SHUT_RDWR)
            drainer.join(timeout=5)
            for sock in (sender, receiver, again, conn, server):
                sock.close()

    def test_a_leftover_of_a_dead_process_with_our_pid_is_replaced(
        self, trixie_root: Path
    ) -> None:
        upcoming = next(netns._pairs) + 1
        stale = f"gm-{os.getpid()}-{upcoming}-a"
        ip("netns", "add", stale)
        with NamespacePair(trixie_root) as pair:
            assert pair.a.netns == stale and netns_pids(stale)  # ours now: sshd runs in it
        assert stale not in list_namespaces()

    def test_failed_start_removes_what_it_made(
        self, trixie_root: Path, leftovers: Leftovers
    ) -> None:
        pair = NamespacePair(trixie_root, writable=[Path("/nonexistent/gm-nothing")])
        with pytest.raises(HostError, match="must be an existing absolute directory"):
            pair.start()
        assert len(pair.sides) == 2  # namespaces were made before sshd failed to start
        assert leftovers(*pair_traces(pair)) == []

    def test_teardown_after_an_exception_leaves_nothing(
        self, trixie: Build, rundir: Path, leftovers: Leftovers
    ) -> None:
        pair = NamespacePair(trixie.root, writable=[rundir])
        with pytest.raises(RuntimeError, match="the cell broke"), pair:
            host = pair.host("a")
            host.spawn(trixie, [trixie.binary, "-M", "none", "-display", "none", "-S"],
                       writable=[rundir], readable=[], output=rundir / "qemu.log")
            assert netns_pids(pair.a.netns)
            raise RuntimeError("the cell broke")
        names, needles, gone = pair_traces(pair)
        assert leftovers(names, [*needles, str(rundir)], gone) == []
        assert set(pair.timings) == {"namespaces", "sshd", "teardown"}


STALE_OWNER = """
import json, sys, time
from pathlib import Path
from harness.builds.model import Build
from harness.hosts.netns import NamespacePair
root, qemu, rundir = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
pair = NamespacePair(root, writable=[rundir]).__enter__()
host = pair.host("b")
proc = host.spawn(Build("t", root, qemu), [qemu, "-M", "none", "-display", "none", "-S"],
                  writable=[rundir], readable=[], output=rundir / "qemu.log")
print(json.dumps({"names": [s.netns for s in pair.sides], "workdir": str(pair.workdir)}),
      flush=True)
time.sleep(600)
"""


def test_sweeper_removes_a_crashed_owners_namespaces(
    trixie: Build, rundir: Path, leftovers: Leftovers
) -> None:
    """A harness killed with SIGKILL: its processes die with it, the sweeper removes the rest."""
    owner = subprocess.Popen(
        [sys.executable, "-c", STALE_OWNER, str(trixie.root), trixie.binary, str(rundir)],
        stdout=subprocess.PIPE, cwd=REPO_ROOT, text=True,
    )
    assert owner.stdout is not None
    started = json.loads(owner.stdout.readline())
    names, workdir = started["names"], Path(started["workdir"])
    assert all(name in list_namespaces() for name in names)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 5
    while any(netns_pids(n) for n in names) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(netns_pids(n) for n in names), "sshd/QEMU outlived the harness"
    assert all(name in list_namespaces() for name in names), "expected stale namespaces"
    removed = sweep_stale()
    assert set(names) <= set(removed) and str(workdir) in removed
    assert leftovers(names, [str(workdir), str(rundir)], [workdir]) == []
