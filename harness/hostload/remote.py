"""Reading a QEMU's threads on a host with a kernel of its own (a lab host), over its SSH connection.

On such a host QEMU's thread ids are the host's (or its sandbox's, whose /proc is the one the
SSH session sees), so ``/proc/<tid>/schedstat`` names them directly. One command per reading,
``grep -H '' FILES``, prints every file's lines prefixed with its name; a file that is gone is
left out of the output (grep complains on stderr, which is ignored). It costs one SSH exec round
trip (a few ms on a LAN, the run queue wait of the remote's sshd under load).
"""

from __future__ import annotations

import time
from collections.abc import Collection

from harness.hostload.errors import HostLoadError
from harness.hostload.procfs import (
    SchedStat,
    host_load,
    parse_cpu_ranges,
    parse_schedstat,
    parse_tgid,
)
from harness.hostload.sample import Sample
from harness.hosts.ssh import SshHost

LOADAVG = "/proc/loadavg"
PRESSURE = "/proc/pressure/cpu"
ONLINE = "/sys/devices/system/cpu/online"
TIMEOUT_S = 10.0


def split_files(output: str) -> dict[str, str]:
    """``grep -H ''`` output -> each file's text (paths hold no colon)."""
    files: dict[str, str] = {}
    for line in output.splitlines():
        path, sep, text = line.partition(":")
        if sep:
            files[path] = files.get(path, "") + text + "\n"
    return files


def _schedstat(tid: int) -> str:
    return f"/proc/{tid}/schedstat"


class SshReader:
    """Reads the scheduling figures of one QEMU's threads on ``host`` over SSH."""

    def __init__(self, host: SshHost) -> None:
        self.where = f"{host.name} (over SSH)"
        self._host = host
        self._tids: set[int] = set()
        self._main = 0
        self._cpus: int | None = None

    @property
    def main_thread(self) -> int:
        return self._main

    def _grep(self, *paths: str) -> dict[str, str]:
        result = self._host.run_command(["grep", "-H", "", *paths], timeout=TIMEOUT_S)
        return split_files(result.stdout)

    def track(self, thread_ids: Collection[int]) -> None:
        """Read these threads from now on; HostLoadError if one does not exist on the host or
        they are not one process's."""
        missing = set(thread_ids) - self._tids
        if not missing:
            return
        status = {tid: f"/proc/{tid}/status" for tid in sorted(missing)}
        files = self._grep(ONLINE, *status.values())
        gone = [tid for tid, path in status.items() if path not in files]
        if gone:
            raise HostLoadError(f"{self.where}: no thread {gone} on the host")
        groups = {parse_tgid(files[path]) for path in status.values()}
        if len(groups) != 1 or (self._main and groups != {self._main}):
            raise HostLoadError(f"{self.where}: threads {sorted(missing)} belong to processes "
                                f"{sorted(groups)}, not to one QEMU")
        self._main = groups.pop()
        if ONLINE in files:
            self._cpus = parse_cpu_ranges(files[ONLINE])
        self._tids |= missing | {self._main}

    def read(self) -> Sample:
        began = time.monotonic()
        files = self._grep(LOADAVG, PRESSURE, *map(_schedstat, sorted(self._tids)))
        ended = time.monotonic()
        if LOADAVG not in files:
            raise HostLoadError(f"{self.where}: cannot read {LOADAVG}")
        threads: dict[int, SchedStat] = {
            tid: parse_schedstat(files[_schedstat(tid)])
            for tid in self._tids if _schedstat(tid) in files
        }
        load = host_load(files[LOADAVG], files.get(PRESSURE), self._cpus)
        return Sample((began + ended) / 2, threads, load, ended - began)
