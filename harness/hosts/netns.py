"""Two network namespaces joined by a veth link, each with an sshd in a build's root.

A :class:`NamespacePair` is the realistic default host pair for cross-build
runs: the source and destination QEMU run in namespaces ``gm-<pid>-<n>-a``
and ``-b`` (unique per process and pair, so pytest-xdist workers never
collide), migration traffic crosses the veth link between them, and the
harness drives each side with :class:`~harness.hosts.ssh.SshHost` over an
sshd listening only on that side's veth address. The harness itself stays in
the host's namespace and dials from inside the namespace (see
:func:`~harness.hosts.setns.in_netns`); it never sends traffic to an address
it did not create. Since that connection is local to the namespace, it
survives the link being taken down (:meth:`NamespacePair.set_link`), so
faults can be injected on the migration path without losing control.

Addresses: each pair holds one /30 of 198.18.0.0/15 (the benchmarking range)
by a lock file in ``/run/goldmig/subnets``; the kernel drops the lock if the
owner dies, so a crash never leaks an address.

Teardown (also after an exception) kills every process in both namespaces,
deletes them (which deletes the veth) and the pair's temp dir. If the harness
itself dies, bwrap's ``--die-with-parent`` takes sshd and everything it
started down with it (the sandbox has its own pid namespace); what is left,
the namespaces and the temp dir, is removed by :func:`sweep_stale` at the
start of the next run. Create pairs from a long-lived thread: the
die-with-parent signal fires when the *thread* that started sshd exits.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from harness.builds.debian import package_version
from harness.errors import HostError
from harness.hosts import sshkeys
from harness.hosts.sandbox import root_view
from harness.hosts.setns import in_netns, ip, list_namespaces, netns_command, netns_pids, pid_alive
from harness.hosts.ssh import SshHost, SshTarget

T = TypeVar("T")

SUPERNET = ipaddress.IPv4Network("198.18.0.0/15")
SUBNETS = SUPERNET.num_addresses // 4
CLAIMS_DIR = Path("/run/goldmig/subnets")
IFNAME = "gm0"
NAME_RE = re.compile(r"^gm-(\d+)-(\d+)-[ab]$")
WORKDIR_RE = re.compile(r"^gm-ns-(\d+)-\d+-")
SSHD = "/usr/sbin/sshd"
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_pairs = itertools.count()


class SubnetClaim:
    """A /30 of 198.18.0.0/15 held with ``flock`` for the life of a pair."""

    def __init__(self, index: int, fd: int, path: Path) -> None:
        self.index = index
        self._fd = fd
        self._path = path

    @property
    def network(self) -> ipaddress.IPv4Network:
        base = SUPERNET.network_address + 4 * self.index
        return ipaddress.IPv4Network(f"{base}/30")

    @classmethod
    def acquire(cls, owner: str, start: int) -> SubnetClaim:
        """The first free /30 from ``start`` on (wrapping); :class:`HostError` if none is free."""
        CLAIMS_DIR.mkdir(parents=True, exist_ok=True)
        for step in range(SUBNETS):
            index = (start + step) % SUBNETS
            path = CLAIMS_DIR / str(index)
            fd = _lock_claim(path)
            if fd is not None:
                os.ftruncate(fd, 0)
                os.write(fd, f"{owner} pid {os.getpid()}\n".encode())
                return cls(index, fd, path)
        raise HostError(f"no free /30 left in {SUPERNET}: every one is claimed in {CLAIMS_DIR}")

    def release(self) -> None:
        # Unlink while still holding the lock: a racer that opened the old file
        # sees, after locking it, that the path no longer names it.
        self._path.unlink(missing_ok=True)
        os.close(self._fd)


def _lock_claim(path: Path) -> int | None:
    """An fd holding the lock on claim file ``path``, or None if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


@dataclass
class NamespaceSide:
    """One side of a pair: its namespace, veth address, build root and sshd."""

    label: str
    netns: str
    address: str
    root: Path
    dir: Path
    """This side's sshd files (config, host key, authorized_keys), shared read-only with it."""
    log: Path
    own: tuple[Path, ...] = ()
    """Host directories shared read-only with this side only (its build's own files)."""
    host_key: sshkeys.KeyPair | None = None
    sshd: subprocess.Popen[bytes] | None = None


class PairState(enum.Enum):
    NEW = "new"
    UP = "up"
    CLOSED = "closed"


class NamespacePair:
    """Namespaces ``a`` and ``b`` with a veth link and an sshd each (a context manager).

    ``writable`` and ``readable`` host directories are visible on both sides at
    the same paths (the cell's run directory, the guest image), and
    ``side_readable`` ones read-only on side a and side b only (the directories
    a path build needs, :attr:`~harness.builds.model.Build.own_dirs`);
    ``side_mounts`` are ``(host dir, path)`` pairs bound writable at that path on side a
    and side b only (a libvirt daemon's private state);
    everything else is the build root, read-only.
    """

    def __init__(
        self,
        root_a: Path,
        root_b: Path | None = None,
        *,
        writable: Sequence[Path] = (),
        readable: Sequence[Path] = (),
        side_readable: tuple[Sequence[Path], Sequence[Path]] = ((), ()),
        side_mounts: tuple[Sequence[tuple[Path, Path]], Sequence[tuple[Path, Path]]] = ((), ()),
        port: int = 22,
        evidence: Path | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        self.roots = (Path(root_a), Path(root_b or root_a))
        self.writable = tuple(Path(p) for p in writable)
        self.readable = tuple(Path(p) for p in readable)
        self.side_readable = tuple(tuple(Path(p) for p in paths) for paths in side_readable)
        self.side_mounts = side_mounts
        self.port = port
        self.evidence = evidence
        self.ready_timeout = ready_timeout
        self.state = PairState.NEW
        self.timings: dict[str, float] = {}
        self.sides: list[NamespaceSide] = []
        self.workdir: Path | None = None
        self._claim: SubnetClaim | None = None
        self._created: list[str] = []
        self._hosts: list[SshHost] = []

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> NamespacePair:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)

    def start(self) -> None:
        """Create namespaces, link and sshds; on any failure undo what was made, then raise."""
        if self.state is not PairState.NEW:
            raise HostError(f"NamespacePair.start() called in state {self.state.value}")
        self.state = PairState.UP
        try:
            self._start()
        except BaseException as exc:
            self.close(exc)
            raise

    def _start(self) -> None:
        for tool in ("ip", "bwrap"):
            if shutil.which(tool) is None:
                raise HostError(
                    f"namespace hosts need {tool!r} (iproute2, bubblewrap): run make setup"
                )
        for root in self.roots:
            if not (root / SSHD.lstrip("/")).exists():
                raise HostError(f"build root {root} has no {SSHD}: it needs openssh-server")
        pid, n = os.getpid(), next(_pairs)
        base = f"gm-{pid}-{n}"
        started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"gm-ns-{pid}-{n}-"))
        self._claim = SubnetClaim.acquire(base, start=(pid * 64 + n) % SUBNETS)
        first, second = self._claim.network.hosts()
        for label, address, root, own in zip("ab", (first, second), self.roots, self.side_readable,
                                             strict=True):
            self.sides.append(NamespaceSide(
                label, f"{base}-{label}", str(address), root,
                self.workdir / f"sshd-{label}", self.workdir / f"sshd-{label}.log", own,
            ))
        self._make_network()
        self.timings["namespaces"] = time.monotonic() - started
        started = time.monotonic()
        self._write_keys()
        for side in self.sides:
            self._start_sshd(side)
        for side in self.sides:
            self._wait_listening(side)
        self.timings["sshd"] = time.monotonic() - started

    def _make_network(self) -> None:
        a, b = self.sides
        for side in self.sides:
            if side.netns in list_namespaces():
                # Our pid, a number this process never issued: left by a dead
                # process that had the same pid.
                remove_namespace(side.netns)
            ip("netns", "add", side.netns)
            self._created.append(side.netns)
        ip("link", "add", IFNAME, "netns", a.netns, "type", "veth",
           "peer", "name", IFNAME, "netns", b.netns)
        for side in self.sides:
            ip("-n", side.netns, "addr", "add", f"{side.address}/30", "dev", IFNAME)
            ip("-n", side.netns, "link", "set", "lo", "up")
            ip("-n", side.netns, "link", "set", IFNAME, "up")

    def _write_keys(self) -> None:
        assert self.workdir is not None
        client = sshkeys.generate(self.workdir / "client_key", "goldmig-client")
        known = []
        for side in self.sides:
            side.dir.mkdir()
            side.host_key = sshkeys.generate(side.dir / "host_key", side.netns)
            (side.dir / "authorized_keys").write_text(client.public + "\n")
            (side.dir / "sshd_config").write_text(self._sshd_config(side))
            name = side.address if self.port == 22 else f"[{side.address}]:{self.port}"
            known.append(f"{name} {side.host_key.public}\n")
        (self.workdir / "known_hosts").write_text("".join(known))

    def _sshd_config(self, side: NamespaceSide) -> str:
        lines = [
            f"# goldmig namespace host {side.netns}",
            f"ListenAddress {side.address}:{self.port}",
            f"HostKey {side.dir / 'host_key'}",
            f"AuthorizedKeysFile {side.dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PidFile none",
            "UseDNS no",
            "PrintMotd no",
            "MaxSessions 64",
            "MaxStartups 64",
        ]
        if _openssh_version(side.root) >= (9, 8):
            # Refused host keys in tests look like attacks; never lock the harness out.
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    def _start_sshd(self, side: NamespaceSide) -> None:
        view = root_view(side.root, self.writable, [*self.readable, *side.own, side.dir],
                         self.side_mounts["ab".index(side.label)])
        cmd = netns_command(side.netns, [
            "bwrap", *view, "--perms", "0755", "--dir", "/run/sshd",
            "--unshare-pid", "--unshare-uts", "--hostname", side.netns, "--die-with-parent",
            "--", SSHD, "-D", "-e", "-f", str(side.dir / "sshd_config"),
        ])
        with open(side.log, "wb") as log:
            side.sshd = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=_ENV,
            )

    def _wait_listening(self, side: NamespaceSide) -> None:
        assert side.sshd is not None
        ready = f"Server listening on {side.address} port {self.port}"
        deadline = time.monotonic() + self.ready_timeout
        while ready not in (log := side.log.read_text(errors="replace")):
            if side.sshd.poll() is not None or time.monotonic() > deadline:
                state = "exited" if side.sshd.poll() is not None else "is not listening"
                raise HostError(
                    f"sshd for namespace host {side.netns} {state} "
                    f"(after {self.ready_timeout}s at most); its log:\n{log.strip()[-2000:]}"
                )
            time.sleep(0.01)

    def close(self, exc: BaseException | None = None) -> None:
        """Tear everything down, every step even if one fails.

        What could not be cleaned up is raised as HostError, or, when ``exc``
        (the error that ended the pair's use) is given, added to it as a note.
        """
        if self.state is PairState.CLOSED:
            return
        started = time.monotonic()
        self.state = PairState.CLOSED
        problems: list[str] = []

        def step(what: str, action: Callable[[], str | None]) -> None:
            try:
                problem = action()
            except Exception as error:  # collected and reported below, never dropped
                problem = f"{what}: {error}"
            if problem:
                problems.append(problem)

        for host in self._hosts:
            step(f"closing {host.name}", host.close)
        for side in self.sides:
            step(f"sshd of {side.netns}", partial(_kill_sshd, side))
        for name in self._created:
            step(f"namespace {name}", partial(_delete_namespace, name))
        step("evidence", self._keep_logs)
        if self._claim is not None:
            step("subnet claim", self._claim.release)
        if self.workdir is not None:
            step("temp dir", partial(_remove_dir, self.workdir))
        self.timings["teardown"] = time.monotonic() - started
        if problems:
            message = "namespace pair teardown left: " + "; ".join(problems)
            if exc is None:
                raise HostError(message)
            exc.add_note(message)

    def _keep_logs(self) -> None:
        if self.evidence is None:
            return None
        self.evidence.mkdir(parents=True, exist_ok=True)
        for side in self.sides:
            if side.log.exists():
                shutil.copyfile(side.log, self.evidence / side.log.name)

    # -- use -------------------------------------------------------------

    @property
    def a(self) -> NamespaceSide:
        return self.side("a")

    @property
    def b(self) -> NamespaceSide:
        return self.side("b")

    def side(self, label: str) -> NamespaceSide:
        if self.state is not PairState.UP:
            raise HostError(f"NamespacePair.side() called in state {self.state.value}")
        for side in self.sides:
            if side.label == label:
                return side
        raise HostError(f"namespace pair has no side {label!r} (only 'a' and 'b')")

    def target(self, label: str) -> SshTarget:
        """How to reach side ``label``'s sshd: its own key, its own known_hosts entry."""
        side = self.side(label)
        assert self.workdir is not None
        return SshTarget(
            name=side.netns, address=side.address, port=self.port, user="root",
            key_file=self.workdir / "client_key", known_hosts=self.workdir / "known_hosts",
            netns=side.netns, root=side.root,
            shared_writable=self.writable, shared_readable=(*self.readable, *side.own),
        )

    def host(self, label: str) -> SshHost:
        """A connected :class:`SshHost` for side ``label``, closed at teardown."""
        host = SshHost(self.target(label))
        host.connect()
        self._hosts.append(host)
        return host

    def run_in(self, label: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` in side ``label``'s network namespace (to make sockets there)."""
        return in_netns(self.side(label).netns, fn)

    def set_link(self, label: str, up: bool) -> None:
        """Take side ``label``'s end of the veth link down or up (fault injection)."""
        ip("-n", self.side(label).netns, "link", "set", IFNAME, "up" if up else "down")

    def link_up(self, label: str) -> bool:
        """Whether side ``label``'s end of the link has carrier (both ends administratively up)."""
        out = ip("-n", self.side(label).netns, "-j", "link", "show", IFNAME).stdout
        return bool(json.loads(out)[0].get("operstate") == "UP")


def _kill_sshd(side: NamespaceSide) -> str | None:
    """SIGKILL a side's sshd sandbox (its pid namespace takes every process in it along)."""
    if side.sshd is None:
        return None
    if side.sshd.poll() is None:
        side.sshd.kill()
    try:
        side.sshd.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        return f"sshd of {side.netns} (pid {side.sshd.pid}) did not exit"
    return None


def _delete_namespace(name: str) -> str | None:
    """Kill what is left in namespace ``name``, then delete it (and with it its veth end)."""
    left = kill_namespace_processes(name, timeout=5.0)
    if left:
        return f"processes {left} still in namespace {name}"
    proc = ip("netns", "del", name, check=False)
    if proc.returncode != 0 and name in list_namespaces():
        return f"namespace {name}: {proc.stderr.strip()}"
    return None


def _remove_dir(path: Path | None) -> str | None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            return f"temp dir {path} could not be removed"
    return None


def kill_namespace_processes(name: str, timeout: float) -> list[int]:
    """SIGKILL every process in namespace ``name`` until none is left; return any survivors."""
    deadline = time.monotonic() + timeout
    while pids := netns_pids(name):
        if time.monotonic() > deadline:
            return pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    return []


def remove_namespace(name: str) -> None:
    """Kill everything in stale namespace ``name`` and delete it (a concurrent delete is fine)."""
    left = kill_namespace_processes(name, timeout=5.0)
    if left:
        raise HostError(f"stale namespace {name}: processes {left} survive SIGKILL")
    proc = ip("netns", "del", name, check=False)
    if name in list_namespaces():
        raise HostError(f"stale namespace {name} cannot be deleted: {proc.stderr.strip()}")


def sweep_stale() -> list[str]:
    """Remove what pairs of dead processes left behind; return the namespaces and dirs removed.

    A pair is stale when the pid in its name no longer exists (a reused pid
    keeps it until that process ends too). Unheld subnet claims are removed as well.
    """
    removed = []
    for name in list_namespaces():
        match = NAME_RE.match(name)
        if match is None or pid_alive(int(match[1])):
            continue
        remove_namespace(name)
        removed.append(name)
    for workdir in Path(tempfile.gettempdir()).glob("gm-ns-*"):
        match = WORKDIR_RE.match(workdir.name)
        if match and not pid_alive(int(match[1])):
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(str(workdir))
    if CLAIMS_DIR.is_dir():
        for claim in CLAIMS_DIR.iterdir():
            fd = _lock_claim(claim)
            if fd is not None:
                claim.unlink(missing_ok=True)
                os.close(fd)
    return removed


@cache
def _openssh_version(root: Path) -> tuple[int, int]:
    """OpenSSH's major.minor in ``root`` (``1:10.0p1-7`` -> (10, 0)); (0, 0) if unknown."""
    version = package_version(root, "openssh-server") or ""
    match = re.match(r"(?:\d+:)?(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else (0, 0)
