"""The SSH host driver (paramiko): namespace hosts made by the harness, and real lab hosts.

A spawned process runs under ``setsid`` in a process group of its own, with
its output sent to a file on the remote side; a waiter shell on the same SSH
channel echoes the pid first and exits with the process's status, so
``poll``/``wait`` need no polling over the network and ``kill`` kills the
whole group. Commands are argv lists joined with :func:`shlex.join`: nothing
from the caller is interpreted by a shell.

Host keys are never learnt on the fly. A namespace host's key is trusted
because :class:`~harness.hosts.netns.NamespacePair` generated it and wrote
its known_hosts entry; a lab host's key must already be in the known_hosts
file. Anything else is refused with :class:`HostKeyRejected`.

Files and sockets. A namespace host's filesystem is a build's root with the
cell's directories bound at the same paths, so QEMU's QMP and console unix
sockets are reachable from the harness unchanged. A real remote host has a
filesystem of its own; the plan (not built yet) is:

* create the run directory at the same path on the remote (SFTP ``mkdir``) and
  copy the guest's kernel/initrd into a content-addressed cache there (SFTP);
* keep QEMU's QMP and console as unix sockets in that remote run directory and
  forward each one to a local unix socket at the same path in the harness's
  run directory, one SSH channel per accepted connection. OpenSSH serves
  ``direct-streamlocal@openssh.com`` channels (what ``ssh -L local.sock:remote.sock``
  uses); paramiko cannot open that channel type, so either send the
  channel-open message ourselves (payload: socket path, reserved string,
  reserved uint32) or, as a fallback, exec a relay on the remote
  (``socat - UNIX-CONNECT:path``) and splice the channel to the local socket.
  :class:`~harness.qemu.monitor.Monitor` and :class:`~harness.qemu.console.Console`
  then work unchanged;
* fetch QEMU's output, the serial log and the stream over SFTP at teardown;
* migration traffic goes host to host on the lab network (``-incoming``
  on the destination's lab address), never through the harness.
"""

from __future__ import annotations

import enum
import functools
import select
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Concatenate, NoReturn, ParamSpec, TypeVar

import paramiko

from harness.builds.model import Build
from harness.errors import HostError
from harness.hosts.base import Process
from harness.hosts.setns import in_netns

P = ParamSpec("P")
R = TypeVar("R")

_NETWORK_ERRORS = (paramiko.SSHException, EOFError, OSError)


class HostKeyRejected(HostError):
    """The server's host key is unknown or differs from the known one: we did not connect."""

    def __init__(
        self, target: SshTarget, offered: paramiko.PKey, expected: paramiko.PKey | None
    ) -> None:
        self.host = target.name
        self.offered_fingerprint = offered.fingerprint
        self.expected_fingerprint = expected.fingerprint if expected is not None else None
        where = f"host {target.name} ({target.known_hosts_name})"
        offered_s = f"{offered.fingerprint} ({offered.get_name()})"
        file = target.known_hosts_path
        if expected is None:
            what = f"{where}: host key {offered_s} is not in {file}; refusing to connect."
            todo = (
                "Check the fingerprint on the host itself (ssh-keygen -lf "
                "/etc/ssh/ssh_host_<type>_key.pub) and, if it matches, add the host's "
                f"public key to {file}."
            )
        else:
            what = (
                f"{where}: HOST KEY CHANGED: the server offered {offered_s} but {file} "
                f"expects {expected.fingerprint} ({expected.get_name()}); refusing to connect "
                "(a reinstalled host, or someone else answering at that address)."
            )
            todo = (
                "Check the new fingerprint on the host itself and, if it matches, replace "
                f"the entry: ssh-keygen -R {shlex.quote(target.known_hosts_name)} -f "
                f"{shlex.quote(str(file))}, then add the new key."
            )
        if target.netns is not None:
            todo = (
                f"Namespace host {target.name} is made by the harness, which wrote {file} "
                "itself: a mismatch means something other than the pair's own sshd answered."
            )
        super().__init__(f"{what} {todo}")


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach an SSH host (validated config; no connection state)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    netns: str | None = None
    """Dial from inside this network namespace (namespace hosts)."""
    root: Path | None = None
    """The build root the remote filesystem is (namespace hosts); None: the host's own."""
    shared_writable: tuple[Path, ...] | None = None
    """Host directories visible read-write at the same path; None: no shared filesystem."""
    shared_readable: tuple[Path, ...] = ()
    connect_timeout: float = 10.0
    user_timeout: float = 30.0
    """Declare the connection lost after this long without acknowledgement (TCP_USER_TIMEOUT)."""

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this host: ``addr``, or ``[addr]:port`` off port 22."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    @property
    def known_hosts_path(self) -> Path:
        return self.known_hosts.expanduser()


class State(enum.Enum):
    NEW = "new"
    CONNECTED = "connected"
    CLOSED = "closed"


def _connected(
    method: Callable[Concatenate[SshHost, P], R],
) -> Callable[Concatenate[SshHost, P], R]:
    """Guard: the method needs a live connection; otherwise name the method and the state."""

    @functools.wraps(method)
    def guard(self: SshHost, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.state is not State.CONNECTED:
            raise HostError(
                f"host {self.name}: {method.__name__}() called in state {self.state.value}"
            )
        return method(self, *args, **kwargs)

    return guard


class _RefuseUnknown(paramiko.RejectPolicy):
    """RejectPolicy that says which host, which fingerprint and what to do."""

    def __init__(self, target: SshTarget) -> None:
        self._target = target

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        raise HostKeyRejected(self._target, key, None)


class SshProcess:
    """A process started by :meth:`SshHost.spawn`; ``pid`` is its pid (and group) on the remote."""

    def __init__(self, host: SshHost, channel: paramiko.Channel, pid: int, argv: list[str]) -> None:
        self.host = host
        self.argv = argv
        self._channel = channel
        self._pid = pid
        self._status: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def poll(self) -> int | None:
        """Exit status (negative signal number if killed), None while running.

        Raises :class:`HostError` if the connection died: the process's fate is unknown.
        """
        if self._status is None and self._channel.exit_status_ready():
            code = self._channel.recv_exit_status()
            if code == -1:
                why = "its waiter gave no exit status" if self.host.alive else "connection lost"
                raise HostError(
                    f"host {self.host.name}: {why} while {self.argv[0]} "
                    f"(remote pid {self._pid}) ran; its state is unknown"
                )
            self._status = -(code - 128) if code > 128 else code
        return self._status

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
            time.sleep(0.02)
        return status

    def close(self) -> None:
        self._channel.close()


class SshHost:
    """Runs a build's processes on an SSH host (the Host protocol, plus ``run``)."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.name = target.name
        self.state = State.NEW
        self._client: paramiko.SSHClient | None = None

    def connect(self) -> None:
        """Open the connection: the host key must be known, or :class:`HostKeyRejected`."""
        if self.state is not State.NEW:
            raise HostError(f"host {self.name}: connect() called in state {self.state.value}")
        target = self.target
        client = paramiko.SSHClient()
        if target.known_hosts_path.exists():
            client.get_host_keys().load(str(target.known_hosts_path))
        client.set_missing_host_key_policy(_RefuseUnknown(target))
        sock = self._dial()
        try:
            client.connect(
                target.address, target.port, username=target.user,
                key_filename=str(target.key_file) if target.key_file else None,
                allow_agent=target.key_file is None, look_for_keys=target.key_file is None,
                sock=sock, timeout=target.connect_timeout,
                banner_timeout=target.connect_timeout, auth_timeout=target.connect_timeout,
            )
        except BaseException as exc:
            client.close()
            sock.close()
            if isinstance(exc, paramiko.BadHostKeyException):
                raise HostKeyRejected(target, exc.key, exc.expected_key) from exc
            if isinstance(exc, paramiko.AuthenticationException):
                raise HostError(
                    f"host {self.name}: {target.user}@{target.known_hosts_name} refused our key "
                    f"({target.key_file or 'agent / ~/.ssh keys'}): {exc}"
                ) from exc
            if isinstance(exc, _NETWORK_ERRORS):
                raise HostError(
                    f"host {self.name}: SSH to {target.known_hosts_name} failed: {exc}"
                ) from exc
            raise
        self._client = client
        self.state = State.CONNECTED

    def _dial(self) -> socket.socket:
        target = self.target

        def dial() -> socket.socket:
            sock = socket.create_connection(
                (target.address, target.port), timeout=target.connect_timeout
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(target.user_timeout * 1000)
            )
            return sock

        try:
            return in_netns(target.netns, dial) if target.netns else dial()
        except OSError as exc:
            where = f" in network namespace {target.netns}" if target.netns else ""
            raise HostError(
                f"host {self.name}: cannot reach {target.known_hosts_name}{where}: {exc}"
            ) from exc

    def close(self) -> None:
        """Close the connection. Processes still running on the host are left as they are."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self.state = State.CLOSED

    def __enter__(self) -> SshHost:
        if self.state is State.NEW:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """Whether the connection is up (False after a loss or close)."""
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    @_connected
    def spawn(
        self,
        build: Build,
        argv: Sequence[str],
        *,
        writable: Sequence[Path],
        readable: Sequence[Path],
        output: Path,
    ) -> SshProcess:
        """Start ``argv`` in its own process group, stdout+stderr appended to remote ``output``."""
        self._check_build(build)
        self._check_paths(writable, readable, output)
        inner = f"exec {shlex.join(argv)} >>{shlex.quote(str(output))} 2>&1 </dev/null"
        waiter = f"setsid sh -c {shlex.quote(inner)} & echo $!; wait $!"
        channel = self._exec(f"exec sh -c {shlex.quote(waiter)}")
        pid = self._read_pid(channel, argv)
        return SshProcess(self, channel, pid, list(argv))

    def _read_pid(self, channel: paramiko.Channel, argv: Sequence[str]) -> int:
        line = b""
        deadline = time.monotonic() + self.target.connect_timeout
        while True:
            # Status first: the remote sends all output before it, so none can slip by.
            ended = channel.exit_status_ready()
            while channel.recv_ready():
                line += channel.recv(64)
            if b"\n" in line:
                break
            if ended:
                err = channel.recv_stderr(65536).decode(errors="replace").strip()
                self._raise_if_lost()
                raise HostError(f"host {self.name}: could not start {argv[0]}: {err}")
            left = deadline - time.monotonic()
            if left <= 0:
                channel.close()
                raise HostError(f"host {self.name}: no pid from the shell starting {argv[0]}")
            select.select([channel], [], [], min(left, 0.5))
        try:
            return int(line)
        except ValueError as exc:
            raise HostError(f"host {self.name}: got {line!r} instead of a pid") from exc

    @_connected
    def kill(self, process: Process) -> None:
        """SIGKILL the process's group on the remote; return once the process is reaped."""
        if not isinstance(process, SshProcess) or process.host is not self:
            raise HostError(f"host {self.name}: kill() of a process it did not start: {process!r}")
        if process.poll() is not None:
            return
        self.run_command(["kill", "-s", "KILL", "--", f"-{process.pid}"], timeout=10.0)
        try:
            process.wait(timeout=10.0)
        except subprocess.TimeoutExpired as exc:
            raise HostError(
                f"host {self.name}: {process.argv[0]} (remote pid {process.pid}) still runs "
                "10 s after SIGKILL"
            ) from exc
        process.close()

    @_connected
    def run(
        self, build: Build, argv: Sequence[str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command of the build to completion (introspection)."""
        self._check_build(build)
        return self.run_command(argv, timeout)

    @_connected
    def run_command(
        self, argv: Sequence[str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the host to completion; stdout and stderr are captured apart."""
        channel = self._exec(shlex.join(argv))
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                ended = channel.exit_status_ready()  # before reading: output precedes it
                while channel.recv_ready():
                    out += channel.recv(65536)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                if ended:
                    break
                if (left := deadline - time.monotonic()) <= 0:
                    raise HostError(
                        f"host {self.name}: {shlex.join(argv)} did not finish in {timeout}s"
                    )
                select.select([channel], [], [], min(left, 0.5))
            code = channel.recv_exit_status()
        finally:
            channel.close()
        if code == -1:
            self._raise_if_lost()
            raise HostError(f"host {self.name}: {argv[0]} ended without an exit status")
        return subprocess.CompletedProcess(
            list(argv), code, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def _exec(self, command: str) -> paramiko.Channel:
        self._raise_if_lost()
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        try:
            channel = transport.open_session(timeout=self.target.connect_timeout)
            channel.exec_command(command)
        except _NETWORK_ERRORS as exc:
            self._raise_if_lost()
            raise HostError(f"host {self.name}: cannot run a command: {exc}") from exc
        return channel

    def _raise_if_lost(self) -> None:
        if not self.alive:
            raise HostError(
                f"host {self.name}: connection to {self.target.known_hosts_name} lost"
            )

    def _check_build(self, build: Build) -> None:
        root = self.target.root
        if root is not None and build.root != root:
            raise HostError(
                f"host {self.name} runs in the root filesystem {root}, but build {build.name} "
                f"lives in {build.root}; use a namespace host made from that build's root"
            )
        if root is None and build.has_own_root:
            raise HostError(
                f"host {self.name} runs binaries from its own filesystem; build {build.name} "
                f"needs its root {build.root}, which is not provisioned on remote hosts yet"
            )

    def _check_paths(
        self, writable: Sequence[Path], readable: Sequence[Path], output: Path
    ) -> None:
        rw = self.target.shared_writable
        if rw is None:
            return
        ro = (*rw, *self.target.shared_readable)
        wanted = [(p, rw, "read-write") for p in (*writable, output.parent)]
        wanted += [(p, ro, "readable") for p in readable]
        for path, shared, how in wanted:
            if not any(path == s or path.is_relative_to(s) for s in shared):
                raise HostError(
                    f"host {self.name}: {path} is not shared {how} with it (shared: "
                    f"{', '.join(map(str, shared)) or 'nothing'}); pass it to the "
                    "NamespacePair as writable= or readable="
                )
