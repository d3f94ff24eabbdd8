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
filesystem of its own. For it there are:

* :meth:`SshHost.put_file`, :meth:`SshHost.read_file` and
  :meth:`SshHost.fetch_tree` to stage and fetch files, over exec channels
  (``cat``, ``tar``), not SFTP: an sshd need not have the sftp subsystem;
* :meth:`SshHost.open_unix_channel`, a ``direct-streamlocal@openssh.com``
  channel to a unix socket on the host (what ``ssh -L local.sock:remote.sock``
  uses), which :class:`~harness.hosts.forward.UnixForward` serves at a local
  path, so :class:`~harness.qemu.monitor.Monitor` and the console work unchanged;
* :meth:`SshHost.listen_remote` and :meth:`SshHost.open_tcp_channel`, so a
  migration stream can be relayed (and recorded) through the harness instead
  of going host to host on the lab network.
"""

from __future__ import annotations

import enum
import functools
import posixpath
import secrets
import select
import shlex
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN

from harness.builds.model import Build
from harness.errors import HostError
from harness.hosts.base import Process
from harness.hosts.forward import RemoteListener
from harness.hosts.setns import in_netns

P = ParamSpec("P")
R = TypeVar("R")

_NETWORK_ERRORS = (paramiko.SSHException, EOFError, OSError)
_CHUNK = 65536
_MISSING = 66
"""read_file's exit status for "no such file" (EX_NOINPUT); cat itself exits 1."""


# Starts the process in a session of its own, prints its pid, and exits with its
# status. A watcher reads the channel's stdin (kept as fd 3: a background job's
# stdin is /dev/null), which ends only when the channel closes, and then kills
# the process group: a process never outlives the harness's connection, whether
# the harness exits, dies or loses the link.
_WAITER = (
    "setsid sh -c {inner} & pid=$!; echo $pid; exec 3<&0; "
    "(cat <&3 >/dev/null 2>&1; kill -s KILL -- -$pid) >/dev/null 2>&1 & "
    "exec 3<&-; wait $pid"
)


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
        if target.root is not None:  # a namespace host: the pair made its key
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
    workdir: str = "/var/tmp/goldmig"
    """Where a host with a filesystem of its own keeps run directories and staged files."""
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
        self._listeners: dict[int, RemoteListener] = {}

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
        """Close the connection; processes still running on the host are killed by their waiters."""
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
        channel = self._exec(f"exec sh -c {shlex.quote(_WAITER.format(inner=shlex.quote(inner)))}")
        pid = self._read_pid(channel, argv)
        return SshProcess(self, channel, pid, list(argv))

    def _read_pid(self, channel: paramiko.Channel, argv: Sequence[str]) -> int:
        line = b""
        deadline = time.monotonic() + self.target.connect_timeout
        while True:
            # End of file first: all output precedes it, so none can slip by.
            ended = channel.eof_received or channel.closed
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
    def signal(self, process: Process, signum: int) -> None:
        """Send ``signum`` to the process's group on the remote."""
        if not isinstance(process, SshProcess) or process.host is not self:
            raise HostError(f"host {self.name}: signal() to a process it did not start: {process!r}")
        self.run_command(["kill", "-s", signal.Signals(signum).name.removeprefix("SIG"), "--",
                          f"-{process.pid}"], timeout=10.0)

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
        command = shlex.join(argv)
        code, out, err = self._finish(self._exec(command), command, timeout)
        return subprocess.CompletedProcess(
            list(argv), code, out.decode(errors="replace"), err.decode(errors="replace")
        )

    @_connected
    def put_file(self, local: Path, remote: str) -> None:
        """Upload ``local`` to ``remote`` atomically (a temporary name, then ``mv``), making its directory."""
        part = f"{remote}.part-{secrets.token_hex(8)}"
        script = (
            f"{shlex.join(['mkdir', '-p', '--', posixpath.dirname(remote) or '.'])}"
            f" && cat > {shlex.quote(part)}"
            f" && {shlex.join(['mv', '-f', '--', part, remote])}"
            f" || {{ {shlex.join(['rm', '-f', '--', part])}; exit 1; }}"
        )
        broken: Exception | None = None
        with open(local, "rb") as file:
            channel = self._exec(script)
            try:
                while chunk := file.read(_CHUNK):
                    channel.sendall(chunk)
                channel.shutdown_write()
            except _NETWORK_ERRORS as exc:  # the command failed early: its status says why
                broken = exc
        self._finish_transfer(channel, broken, f"upload {local} to {remote}")

    @_connected
    def read_file(self, remote: str) -> bytes | None:
        """The content of file ``remote`` on the host; None if there is no such file."""
        path = shlex.quote(remote)
        channel = self._exec(f"test -e {path} || exit {_MISSING}; exec cat -- {path}")
        code, out, err = self._finish(channel, f"cat {remote}", 60.0)
        if code == _MISSING:
            return None
        if code != 0:
            raise HostError(
                f"host {self.name}: cannot read {remote}: {err.decode(errors='replace').strip()}"
            )
        return out

    @_connected
    def fetch_tree(self, remote_dir: str, local_dir: Path) -> None:
        """Copy the regular files under ``remote_dir`` into ``local_dir`` (a streamed tar).

        Sockets and fifos are left out (tar skips sockets; fifos are filtered out here).
        """
        local_dir.mkdir(parents=True, exist_ok=True)
        channel = self._exec(shlex.join(["tar", "-C", remote_dir, "-cf", "-", "."]))
        broken: Exception | None = None
        try:
            with tarfile.open(fileobj=channel.makefile("rb"), mode="r|") as tar:
                tar.extractall(local_dir, filter=_regular_files)
        except (tarfile.TarError, *_NETWORK_ERRORS) as exc:
            broken = exc
        self._finish_transfer(channel, broken, f"fetch {remote_dir} into {local_dir}")

    def _finish_transfer(self, channel: paramiko.Channel, broken: Exception | None, what: str) -> None:
        """End a file transfer's command; HostError with its stderr (or status) if it failed."""
        code, _, err = self._finish(channel, what, 60.0)
        if code != 0 or broken is not None:
            why = err.decode(errors="replace").strip() or f"exit {code}, {broken}"
            raise HostError(f"host {self.name}: cannot {what}: {why}")

    @_connected
    def open_unix_channel(self, path: str) -> paramiko.Channel:
        """A channel to the unix socket ``path`` on the host; HostError if it is not there (yet)."""
        try:
            return _open_streamlocal(self._transport(), path, self.target.connect_timeout)
        except _NETWORK_ERRORS as exc:
            raise self._open_failed(f"unix socket {path}", exc) from exc

    @_connected
    def open_tcp_channel(self, address: str, port: int) -> paramiko.Channel:
        """A channel to TCP ``address``:``port`` as seen from the host (``direct-tcpip``)."""
        try:
            return self._transport().open_channel(
                "direct-tcpip", (address, port), ("127.0.0.1", 0),
                timeout=self.target.connect_timeout,
            )
        except _NETWORK_ERRORS as exc:
            raise self._open_failed(f"{address}:{port}", exc) from exc

    @_connected
    def listen_remote(self, address: str) -> RemoteListener:
        """A port the host listens on at ``address`` (it picks the number) for the harness."""
        transport = self._transport()
        try:
            port = transport.request_port_forward(address, 0, self._forwarded)
        except _NETWORK_ERRORS as exc:
            self._raise_if_lost()
            raise HostError(
                f"host {self.name}: cannot listen on {address} (tcpip-forward): {exc}"
            ) from exc
        listener = RemoteListener(
            self.name, transport, address, port, lambda: self._listeners.pop(port, None)
        )
        self._listeners[port] = listener
        return listener

    def _forwarded(
        self, channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]
    ) -> None:
        """paramiko's handler for every forwarded connection (one per transport): to its listener."""
        listener = self._listeners.get(server[1])
        if listener is None:
            channel.close()
        else:
            listener.deliver(channel, origin)

    def _open_failed(self, what: str, exc: BaseException) -> HostError:
        self._raise_if_lost()
        why = exc.text if isinstance(exc, paramiko.ChannelException) else exc
        return HostError(f"host {self.name}: cannot open a channel to {what}: {why}")

    def _finish(self, channel: paramiko.Channel, what: str, timeout: float) -> tuple[int, bytes, bytes]:
        """Read a command's output to its end and close its channel: (status, stdout, stderr).

        The output ends at end of file, not at the exit status: sshd may send
        the status while output of the process is still on its way.
        """
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                ended = channel.eof_received or channel.closed  # before reading: output precedes it
                while channel.recv_ready():
                    out += channel.recv(_CHUNK)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(_CHUNK)
                left = deadline - time.monotonic()
                if ended and channel.status_event.wait(max(left, 0.0)):
                    break
                if left <= 0:
                    raise HostError(f"host {self.name}: {what} did not finish in {timeout}s")
                select.select([channel], [], [], min(left, 0.5))
            code = channel.recv_exit_status()
        finally:
            channel.close()
        if code == -1:
            self._raise_if_lost()
            raise HostError(f"host {self.name}: {what} ended without an exit status")
        return code, bytes(out), bytes(err)

    def _transport(self) -> paramiko.Transport:
        self._raise_if_lost()
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        return transport

    def _exec(self, command: str) -> paramiko.Channel:
        transport = self._transport()
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
        shared = (*(self.target.shared_writable or ()), *self.target.shared_readable)
        unseen = [d for d in build.own_dirs if not any(d.is_relative_to(s) for s in shared)]
        if unseen:
            raise HostError(
                f"host {self.name} cannot see {unseen[0]} of this machine, which build "
                f"{build.name} runs from: a namespace host must be made with the build's "
                "own_dirs as side_readable; a lab host runs builds installed on it"
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


def _regular_files(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """fetch_tree's tar filter: regular files and directories (not the top one), data-safe."""
    if member.name == "." or not (member.isfile() or member.isdir()):
        return None
    return tarfile.data_filter(member, dest)


def _open_streamlocal(transport: paramiko.Transport, path: str, timeout: float) -> paramiko.Channel:
    """Open a ``direct-streamlocal@openssh.com`` channel to unix socket ``path`` on the server.

    paramiko's ``Transport.open_channel`` encodes only the payloads of the kinds
    it knows; this is its code for this kind (payload: socket path, reserved
    string, reserved uint32). It uses paramiko internals, hence paramiko<6.
    """
    if not transport.is_active():
        raise paramiko.SSHException("SSH session not active")
    internals: Any = transport  # the private parts are not in paramiko's type stubs
    with transport.lock:
        chanid = internals._next_channel()
        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string("direct-streamlocal@openssh.com")
        m.add_int(chanid)
        m.add_int(transport.default_window_size)
        m.add_int(transport.default_max_packet_size)
        m.add_string(path)
        m.add_string("")
        m.add_int(0)
        chan: Any = paramiko.Channel(chanid)
        internals._channels.put(chanid, chan)
        transport.channel_events[chanid] = event = threading.Event()
        transport.channels_seen[chanid] = True
        chan._set_transport(transport)
        chan._set_window(transport.default_window_size, transport.default_max_packet_size)
    internals._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not event.wait(0.1):
        if not transport.is_active():
            raise transport.get_exception() or paramiko.SSHException("Unable to open channel.")
        if time.monotonic() > deadline:
            raise paramiko.SSHException("Timeout opening channel.")
    opened: paramiko.Channel | None = internals._channels.get(chanid)
    if opened is None:  # refused: paramiko saved the reason
        raise transport.get_exception() or paramiko.SSHException("Unable to open channel.")
    return opened
