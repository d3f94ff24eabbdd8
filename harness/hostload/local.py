"""Reading a QEMU's threads on this machine: local hosts, and namespace hosts (this kernel too).

QEMU reports its threads' ids as its own pid namespace numbers them: ours for a local QEMU
(bwrap without ``--unshare-pid``), the sandbox's for a namespace host (sshd and everything it
starts live in a pid namespace of their own). To read them here, the QEMU process is found by
its exact command line (unique: it names the cell's own sockets; the shells around it carry it
as one string, not as argv) and each of its tasks is mapped by the last entry of ``NSpid:``,
its id in its own namespace, to this machine's id. That scan runs when a thread is first asked
for; a reading then only opens the mapped ``schedstat`` files, plus /proc/loadavg and
/proc/pressure/cpu.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from harness.hostload.errors import HostLoadError
from harness.hostload.procfs import SchedStat, host_load, parse_nspid, parse_schedstat
from harness.hostload.sample import Sample

PROC = Path("/proc")


def find_process(argv: Sequence[str], proc: Path = PROC) -> int:
    """This machine's pid of the one process whose command line is exactly ``argv``."""
    if not argv:
        raise HostLoadError("no command line to find QEMU by (a QEMU libvirt started)")
    wanted = b"".join(arg.encode() + b"\0" for arg in argv)
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            if (proc / entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry))
        except OSError:  # exited meanwhile
            continue
    if len(found) != 1:
        what = "no process" if not found else f"{len(found)} processes ({found})"
        raise HostLoadError(f"{what} on this machine with the command line of {argv[0]} "
                            f"{' '.join(argv[1:4])} ...")
    return found[0]


def task_ids(pid: int, proc: Path = PROC) -> dict[int, int]:
    """Process ``pid``'s tasks: their id in their own pid namespace -> their id on this machine."""
    tasks = {}
    try:
        entries = os.listdir(proc / str(pid) / "task")
    except OSError as exc:
        raise HostLoadError(f"process {pid} is gone: {exc}") from exc
    for entry in entries:
        try:
            status = (proc / str(pid) / "task" / entry / "status").read_text()
        except OSError:  # the thread exited meanwhile
            continue
        tasks[parse_nspid(status)[-1]] = int(entry)
    return tasks


class LocalReader:
    """Reads the scheduling figures of one QEMU's threads on this machine."""

    def __init__(self, argv: Sequence[str], where: str, proc: Path = PROC) -> None:
        self.where = where
        self._argv = list(argv)
        self._proc = proc
        self._pid: int | None = None
        self._main = 0
        self._paths: dict[int, Path] = {}
        self._cpus = os.cpu_count()

    @property
    def main_thread(self) -> int:
        """QEMU's main thread (its pid) as QEMU's namespace numbers it; 0 until :meth:`track`."""
        return self._main

    def track(self, thread_ids: Collection[int]) -> None:
        """Read these threads (QEMU's own ids) from now on; HostLoadError if one is not QEMU's."""
        missing = set(thread_ids) - self._paths.keys()
        if not missing and self._pid is not None:
            return
        if self._pid is None:
            self._pid = find_process(self._argv, self._proc)
            status = (self._proc / str(self._pid) / "status").read_text()
            self._main = parse_nspid(status)[-1]
            missing.add(self._main)
        tasks = task_ids(self._pid, self._proc)
        for tid in missing:
            if tid not in tasks:
                raise HostLoadError(f"{self.where}: QEMU (pid {self._pid} here) has no thread "
                                    f"{tid} (its tasks: {sorted(tasks)})")
            self._paths[tid] = self._proc / str(self._pid) / "task" / str(tasks[tid]) / "schedstat"

    def read(self) -> Sample:
        """Every tracked thread's figures (a thread that is gone is left out) and the load."""
        began = time.monotonic()
        threads: dict[int, SchedStat] = {}
        for tid, path in self._paths.items():
            try:
                threads[tid] = parse_schedstat(path.read_text())
            except OSError:  # the thread or QEMU exited
                continue
        loadavg = (self._proc / "loadavg").read_text()
        try:
            pressure: str | None = (self._proc / "pressure" / "cpu").read_text()
        except OSError:  # no PSI in this kernel (or it is off)
            pressure = None
        ended = time.monotonic()
        return Sample((began + ended) / 2, threads, host_load(loadavg, pressure, self._cpus),
                      ended - began)
