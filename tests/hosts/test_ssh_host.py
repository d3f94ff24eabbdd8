"""SshHost against real namespace hosts: QEMU over SSH, host keys, connection loss."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import paramiko
import pytest

from harness.builds.model import Build
from harness.errors import HostError
from harness.hosts import sshkeys
from harness.hosts.netns import NamespacePair
from harness.hosts.ssh import HostKeyRejected, SshHost, SshTarget
from harness.hosts.workspace import SharedWorkspace
from harness.qemu.argv import SidePaths
from harness.qemu.process import QemuProcess

Leftovers = Callable[[list[str], list[str], list[Path]], list[str]]
Commands = Callable[[str], list[str]]


@pytest.fixture
def pair(trixie: Build, rundir: Path) -> Iterator[NamespacePair]:
    with NamespacePair(trixie.root, writable=[rundir]) as made:
        yield made


def tiny_qemu(build: Build, paths: SidePaths, *extra: str) -> list[str]:
    """A QEMU with no machine at all: enough for QMP, a console socket and a migration."""
    return [
        build.binary, "-M", "none", "-nodefaults", "-display", "none",
        "-qmp", f"unix:{paths.qmp},server=on,wait=off",
        "-chardev", f"socket,id=console0,path={paths.console},server=on,wait=off",
        *extra,
    ]


def _settles(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """``condition`` holds now or within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def migration_ends(qemu: QemuProcess, timeout: float = 20.0) -> str | None:
    """The migration status once it is no longer in progress (None if it never started)."""
    deadline = time.monotonic() + timeout
    while (status := qemu.monitor.cmd("query-migrate").get("status")) in (
        None, "setup", "active", "device"
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    return status  # type: ignore[no-any-return]


def test_qemu_over_ssh_in_one_namespace_migrates_to_the_other(
    trixie: Build, rundir: Path, leftovers: Leftovers, commands: Commands,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The pieces together: QEMU started over SSH in each namespace, QMP from the harness
    through the shared run directory, migration over the veth link, nothing left after."""
    began = time.monotonic()
    pair = NamespacePair(trixie.root, writable=[rundir])
    with pair:
        connecting = time.monotonic()
        hosts = {"src": pair.host("a"), "dst": pair.host("b")}
        connect_s = time.monotonic() - connecting
        incoming = f"tcp:{pair.b.address}:4444"
        with ExitStack() as stack:
            qemus = {}
            for role, extra in (("src", ["-S"]), ("dst", ["-incoming", incoming])):
                paths = SidePaths.for_role(rundir, role)
                qemu = QemuProcess(role, hosts[role], trixie, tiny_qemu(trixie, paths, *extra),
                                   paths, SharedWorkspace(rundir, []))
                qemus[role] = stack.enter_context(qemu)
                qemu.start()
            version = qemus["src"].monitor.cmd("query-version")
            assert version["qemu"]["major"] >= 10, version
            qemus["src"].monitor.cmd("migrate", uri=incoming)
            for qemu in (qemus["src"], qemus["dst"]):
                assert migration_ends(qemu) == "completed", qemu.monitor.cmd("query-migrate")
            remote_pids = {role: q._process.pid for role, q in qemus.items() if q._process}
        assert all(not q.alive() for q in qemus.values())
        # QEMU is reaped; its connection watcher (a subshell with the same command line) exits
        # once it sees the channel close, a moment later.
        assert _settles(lambda: not [c for s in pair.sides for c in commands(s.netns) if "qemu" in c])
    names = [s.netns for s in pair.sides]
    assert pair.workdir is not None
    assert leftovers(names, [str(pair.workdir), str(rundir)], [pair.workdir]) == []
    with capsys.disabled():
        print(
            f"\n  namespaces {pair.timings['namespaces']:.3f}s,"
            f" sshd up {pair.timings['sshd']:.3f}s,"
            f" 2 SSH connects {connect_s:.3f}s, teardown {pair.timings['teardown']:.3f}s,"
            f" whole demo {time.monotonic() - began:.2f}s (remote pids {remote_pids})"
        )


def test_commands_reach_the_remote_unchanged(
    pair: NamespacePair, trixie: Build, rundir: Path
) -> None:
    host = pair.host("a")
    tricky = ["$(touch /tmp/pwned)", "a;b", "'q\"", "*", "`id`", "x y"]
    result = host.run(trixie, ["printf", r"%s\n", *tricky])
    assert (result.returncode, result.stdout.splitlines()) == (0, tricky)
    assert host.run(trixie, ["sh", "-c", "echo oops >&2; exit 3"]).returncode == 3
    output = rundir / "out put 'x'.log"
    proc = host.spawn(trixie, ["printf", "%s|", *tricky], writable=[rundir], readable=[],
                      output=output)
    assert proc.wait(timeout=10) == 0
    assert output.read_text() == "|".join(tricky) + "|"
    assert host.run(trixie, ["hostname"]).stdout.strip() == pair.a.netns


def test_kill_takes_the_whole_process_group(
    pair: NamespacePair, trixie: Build, rundir: Path
) -> None:
    host = pair.host("b")
    proc = host.spawn(trixie, ["sh", "-c", "sleep 600 & sleep 600 & wait"],
                      writable=[rundir], readable=[], output=rundir / "sleep.log")
    group = ["pgrep", "-g", str(proc.pid)]
    deadline = time.monotonic() + 10
    while len(host.run(trixie, group).stdout.split()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(host.run(trixie, group).stdout.split()) == 3 and proc.poll() is None
    host.kill(proc)
    assert proc.poll() == -9
    assert host.run(trixie, group).stdout == ""
    host.kill(proc)  # already gone: nothing to do


def test_a_closed_connection_takes_its_processes_along(
    pair: NamespacePair, trixie: Build, rundir: Path, commands: Commands
) -> None:
    """What a harness that exits, dies or loses the link leaves on a lab host: nothing."""
    host = pair.host("b")

    def sleepers() -> list[str]:
        return [c for c in commands(pair.b.netns) if c.split()[:2] == ["sleep", "600"]]

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(sleepers()) != count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(sleepers()) == count

    proc = host.spawn(trixie, ["sleep", "600"], writable=[rundir], readable=[],
                      output=rundir / "sleep.log")
    wait_for(1)  # the spawned shell has exec'd sleep
    assert proc.poll() is None
    host.close()
    wait_for(0)


def test_spawn_refuses_what_the_host_cannot_see(
    pair: NamespacePair, trixie: Build, rundir: Path, tmp_path: Path
) -> None:
    host = pair.host("a")
    argv = [trixie.binary, "-version"]
    other = Build("elsewhere", tmp_path, trixie.binary)
    with pytest.raises(HostError, match=rf"{pair.a.netns} runs in the root filesystem"):
        host.spawn(other, argv, writable=[rundir], readable=[], output=rundir / "x.log")
    with pytest.raises(HostError, match=r"is not shared read-write"):
        host.spawn(trixie, argv, writable=[rundir], readable=[], output=tmp_path / "x.log")
    with pytest.raises(HostError, match=r"is not shared readable"):
        host.spawn(trixie, argv, writable=[rundir], readable=[tmp_path], output=rundir / "x.log")


class TestHostKeys:
    def test_a_changed_key_is_refused_with_what_to_do(
        self, pair: NamespacePair, tmp_path: Path
    ) -> None:
        assert pair.a.host_key is not None and pair.b.host_key is not None
        known = tmp_path / "known_hosts"
        known.write_text(f"{pair.a.address} {pair.b.host_key.public}\n")
        with pytest.raises(HostKeyRejected) as caught:
            SshHost(replace(pair.target("a"), known_hosts=known)).connect()
        message = str(caught.value)
        for expected in (pair.a.netns, pair.a.address, "HOST KEY CHANGED", str(known),
                         pair.a.host_key.fingerprint, pair.b.host_key.fingerprint,
                         "refusing to connect", "something other than the pair's own sshd"):
            assert expected in message
        assert caught.value.offered_fingerprint == pair.a.host_key.fingerprint

    def test_an_unknown_key_is_refused(self, pair: NamespacePair, tmp_path: Path) -> None:
        assert pair.a.host_key is not None
        with pytest.raises(HostKeyRejected, match="is not in") as caught:
            SshHost(replace(pair.target("a"), known_hosts=tmp_path / "none")).connect()
        assert pair.a.host_key.fingerprint in str(caught.value)

    def test_the_pairs_own_entry_is_trusted(self, pair: NamespacePair) -> None:
        with SshHost(pair.target("b")) as host:
            assert host.run_command(["true"]).returncode == 0

    def test_lab_host_messages_say_how_to_fix(self, tmp_path: Path) -> None:
        keys = [sshkeys.generate(tmp_path / name, name) for name in ("new", "old")]
        new, old = (paramiko.Ed25519Key.from_private_key_file(str(k.private)) for k in keys)
        lab = SshTarget(name="lab-p9", address="192.0.2.7", port=2222,
                        known_hosts=tmp_path / "known_hosts")
        changed = str(HostKeyRejected(lab, new, old))
        assert "lab-p9 ([192.0.2.7]:2222)" in changed
        assert keys[0].fingerprint in changed and keys[1].fingerprint in changed
        assert f"ssh-keygen -R '[192.0.2.7]:2222' -f {tmp_path / 'known_hosts'}" in changed
        unknown = str(HostKeyRejected(lab, new, None))
        assert "ssh-keygen -lf" in unknown and "add the host's public key" in unknown


def test_connection_loss_is_a_host_error_naming_the_host(
    pair: NamespacePair, trixie: Build, rundir: Path
) -> None:
    host = pair.host("a")
    proc = host.spawn(trixie, [trixie.binary, "-M", "none", "-display", "none", "-S"],
                      writable=[rundir], readable=[], output=rundir / "qemu.log")
    assert proc.poll() is None
    assert pair.a.sshd is not None
    pair.a.sshd.kill()  # the namespace host dies, and everything it ran with it
    with pytest.raises(HostError, match=rf"host {pair.a.netns}: connection lost"):
        proc.wait(timeout=10)
    with pytest.raises(HostError, match=rf"host {pair.a.netns}: connection to .* lost"):
        host.run_command(["true"])
    assert not host.alive


def test_operations_need_a_connection(tmp_path: Path, trixie: Build) -> None:
    host = SshHost(SshTarget(name="lab-x", address="192.0.2.1"))
    with pytest.raises(HostError, match=r"host lab-x: spawn\(\) called in state new"):
        host.spawn(trixie, ["true"], writable=[], readable=[], output=tmp_path / "o")
    host.close()
    with pytest.raises(HostError, match=r"run_command\(\) called in state closed"):
        host.run_command(["true"])
