"""How a host sees a cell's run directory: the same files, or a copy on its own filesystem.

The harness keeps every cell's files in a local run directory. A local or
namespace host sees that directory at the same path (:class:`SharedWorkspace`:
no translation at all). A real remote host has a filesystem of its own
(:class:`RemoteWorkspace`): the run directory gets a twin under the host's
work directory, input files (the guest's kernel and initrd) are uploaded once
into a content-addressed cache there, QEMU's unix sockets are forwarded over
SSH to the same names in the local run directory, and at the end everything
QEMU wrote is fetched back so the evidence looks the same whatever the host.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Protocol, TypeGuard

from harness.errors import HostError
from harness.hosts.base import Host
from harness.hosts.forward import UnixForward
from harness.hosts.ssh import SshHost


class Workspace(Protocol):
    """The run directory as one host sees it (a context manager: closing collects evidence)."""

    @property
    def writable(self) -> Sequence[Path]:
        """Host-side directories a process may write (for the host's sandbox)."""
        ...

    @property
    def readable(self) -> Sequence[Path]:
        """Host-side directories with staged input files."""
        ...

    def path(self, local: Path) -> Path:
        """The host-side path of ``local``, a file in the run directory."""
        ...

    def stage(self, file: Path) -> Path:
        """Make the local input ``file`` available on the host; its host-side path."""
        ...

    def reach(self, local_socket: Path, alive: Callable[[], bool], timeout: float) -> None:
        """Once the host's socket at ``path(local_socket)`` exists, make it connectable locally."""
        ...

    def read_text(self, local: Path) -> str:
        """The current content of the host's copy of ``local`` ("" if there is none yet)."""
        ...

    def __enter__(self) -> Workspace: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def own_filesystem(host: Host) -> TypeGuard[SshHost]:
    """A real remote host: nothing of this machine's filesystem is visible to it."""
    return isinstance(host, SshHost) and host.target.shared_writable is None


def workspace_for(host: Host, rundir: Path, readable: Sequence[Path]) -> Workspace:
    """The run directory as ``host`` sees it; ``readable`` are the local input directories."""
    if own_filesystem(host):
        return RemoteWorkspace(host, rundir)
    return SharedWorkspace(rundir, readable)


class SharedWorkspace:
    """The host sees the run directory and the input files at their own paths."""

    def __init__(self, rundir: Path, readable: Sequence[Path]) -> None:
        self.writable = [rundir]
        self.readable = list(readable)

    def path(self, local: Path) -> Path:
        return local

    def stage(self, file: Path) -> Path:
        shared = [*self.writable, *self.readable]  # the run directory (a stream made in it) too
        if not any(file.is_relative_to(d) for d in shared):
            raise HostError(f"{file} is not under a directory shared with the host "
                            f"({', '.join(map(str, shared))})")
        return file

    def reach(self, local_socket: Path, alive: Callable[[], bool], timeout: float) -> None:
        return None  # the socket is already where the harness connects

    def read_text(self, local: Path) -> str:
        try:
            return local.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> SharedWorkspace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class RemoteWorkspace:
    """A twin of the run directory under ``host``'s work directory, with forwarded sockets.

    Layout on the host: ``<workdir>/runs/<run dir name>/`` (removed at the end)
    and ``<workdir>/files/<sha256 prefix>-<name>`` (kept: the next cell reuses it).
    """

    def __init__(self, host: SshHost, rundir: Path) -> None:
        self._host = host
        self._rundir = rundir
        workdir = PurePosixPath(host.target.workdir)
        self._remote_dir = Path(workdir / "runs" / rundir.name)
        self._files = Path(workdir / "files")
        self._forwards: list[UnixForward] = []
        self.writable = [self._remote_dir]
        self.readable = [self._files]

    def __enter__(self) -> RemoteWorkspace:
        self._shell("mkdir", "-p", "--", str(self._remote_dir), str(self._files))
        return self

    def path(self, local: Path) -> Path:
        try:
            return self._remote_dir / local.relative_to(self._rundir)
        except ValueError:
            raise HostError(f"{local} is not in the cell's run directory {self._rundir}") from None

    def stage(self, file: Path) -> Path:
        remote = self._files / f"{_digest(file, file.stat().st_mtime_ns)[:16]}-{file.name}"
        if self._shell_status("test", "-f", str(remote)) != 0:
            self._host.put_file(file, str(remote))
        return remote

    def reach(self, local_socket: Path, alive: Callable[[], bool], timeout: float) -> None:
        remote = self.path(local_socket)
        deadline = time.monotonic() + timeout
        while self._shell_status("test", "-S", str(remote)) != 0:
            if not alive():
                raise HostError(f"host {self._host.name}: QEMU exited before it made {remote}")
            if time.monotonic() > deadline:
                raise HostError(f"host {self._host.name}: {remote} did not appear in {timeout}s")
            time.sleep(0.05)
        self._forwards.append(UnixForward(self._host, str(remote), local_socket))

    def read_text(self, local: Path) -> str:
        data = self._host.read_file(str(self.path(local)))
        return "" if data is None else data.decode(errors="replace")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the forwards, fetch what QEMU wrote, remove the host's copy; every step runs."""
        problems = []
        steps: list[Callable[[], None]] = [forward.close for forward in self._forwards]
        steps += [lambda: self._host.fetch_tree(str(self._remote_dir), self._rundir),
                  lambda: self._shell("rm", "-rf", "--", str(self._remote_dir))]
        for step in steps:
            try:
                step()
            except HostError as error:
                problems.append(str(error))
        if problems:
            message = "; ".join(problems)
            if exc is None:
                raise HostError(message)
            exc.add_note(message)

    def _shell_status(self, *argv: str) -> int:
        return self._host.run_command(argv, timeout=30.0).returncode

    def _shell(self, *argv: str) -> None:
        proc = self._host.run_command(argv, timeout=30.0)
        if proc.returncode != 0:
            raise HostError(f"host {self._host.name}: {shlex.join(argv)}: exit {proc.returncode}: "
                            f"{proc.stderr.strip()}")


@cache
def _digest(file: Path, mtime_ns: int) -> str:
    """sha256 of ``file`` (cached per content version: the guest image is 30 MB)."""
    sha = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()
