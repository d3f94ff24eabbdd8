"""What a scenario is given: the started pair, where to write, limits and phase timing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.migration.run import MigrationResult
from harness.migration.transport import Transport
from harness.qemu.process import QemuProcess
from harness.timing import timed


@dataclass(frozen=True)
class Timeouts:
    boot_s: float = 60.0
    migrate_s: float = 120.0
    beat_s: float = 15.0


@dataclass
class ScenarioContext:
    """Mutable only in what the scenario reports back: phase times and the migration result."""

    src: QemuProcess
    dst: QemuProcess
    rundir: Path
    timeouts: Timeouts
    transport_to: Callable[[QemuProcess], Transport]
    record_stream: bool = True
    start_return: Callable[[], QemuProcess] = field(default=lambda: _not_given("a return destination"))
    golden_stream: Callable[[], Path] = field(default=lambda: _not_given("a golden stream"))
    phases: dict[str, float] = field(default_factory=dict)
    migrations: list[MigrationResult] = field(default_factory=list)

    def phase(self, name: str) -> AbstractContextManager[None]:
        return timed(self.phases, name)


def _not_given(what: str) -> Any:
    raise HarnessError(f"this cell was not given {what}")
