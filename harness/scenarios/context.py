"""What a scenario is given: the started pair, where to write, limits and phase timing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.builds.model import Build
from harness.errors import HarnessError
from harness.matrix.model import Timeouts
from harness.migration.run import MigrationResult
from harness.migration.transport import Transport
from harness.qemu.machine import MachineSetup
from harness.qemu.process import QemuProcess
from harness.timing import timed


@dataclass
class ScenarioContext:
    """Mutable only in what the scenario reports back: phase times and the migration result.

    ``builds`` (source, destination) and ``setup`` say what the cell is, for
    scenarios that ask the builds themselves (saved streams, vmstate dumps).
    """

    src: QemuProcess
    dst: QemuProcess
    builds: tuple[Build, Build]
    setup: MachineSetup
    rundir: Path
    timeouts: Timeouts
    transport_to: Callable[[QemuProcess], Transport]
    record_stream: bool = True
    start_return: Callable[[], QemuProcess] = field(default=lambda: _not_given("a return destination"))
    phases: dict[str, float] = field(default_factory=dict)
    migrations: list[MigrationResult] = field(default_factory=list)

    def phase(self, name: str) -> AbstractContextManager[None]:
        return timed(self.phases, name)


def _not_given(what: str) -> Any:
    raise HarnessError(f"this cell was not given {what}")
