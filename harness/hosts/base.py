"""The interface every host driver offers (local, network namespace, remote SSH)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from harness.builds.model import Build


class Process(Protocol):
    """A started process: enough of ``subprocess.Popen`` for the harness."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Host(Protocol):
    """Runs a build's QEMU with some host directories visible at the same paths."""

    name: str

    def spawn(
        self,
        build: Build,
        argv: Sequence[str],
        *,
        writable: Sequence[Path],
        readable: Sequence[Path],
        output: Path,
    ) -> Process:
        """Start ``argv`` (argv[0] is the build's binary) with stdout+stderr to ``output``."""
        ...

    def kill(self, process: Process) -> None:
        """Kill the process and everything it started; return once it is reaped."""
        ...

    def signal(self, process: Process, signum: int) -> None:
        """Send ``signum`` to the process's group and return (fault injection: stop, resume, kill)."""
        ...

    def run(
        self, build: Build, argv: Sequence[str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command of the build to completion (introspection)."""
        ...
