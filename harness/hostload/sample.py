"""One reading of a QEMU's threads and its host's load, and the interface every reader offers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from harness.hostload.procfs import HostLoad, SchedStat


@dataclass(frozen=True)
class Sample:
    """What one reader saw at one moment."""

    at: float
    """``time.monotonic()`` of this process when the figures were read (the middle of the read)."""
    threads: Mapping[int, SchedStat]
    """By thread id as QEMU reports it; a thread that could not be read (gone) is absent."""
    load: HostLoad
    cost_s: float
    """How long the read took."""


class ThreadReader(Protocol):
    """Reads one QEMU's threads where it runs (this machine's /proc, or over SSH)."""

    where: str
    """Where it reads, for messages ("local", "gm-123-0-a (a namespace of this machine)")."""

    @property
    def main_thread(self) -> int:
        """QEMU's main thread (its pid) as QEMU's namespace numbers it, once tracking."""
        ...

    def track(self, thread_ids: Collection[int]) -> None:
        """Read these threads (as QEMU reports them) from now on; also find the main thread."""
        ...

    def read(self) -> Sample:
        """The tracked threads' figures and the host's load, now."""
        ...
