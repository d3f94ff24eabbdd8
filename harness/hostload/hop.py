"""Starvation windows around one migration hop: opened on both QEMUs before the migration,
closed once every CPU's first tick after it was seen (the span a tick gap covers)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.hostload.meter import Starvation, Window, starvation_ms


@dataclass
class HopWatch:
    windows: tuple[Window, ...]

    def stop(self) -> HopStarvation:
        return HopStarvation(tuple(w.stop() for w in self.windows))

    def so_far(self) -> HopStarvation:
        """The windows' readings until now, the windows left open."""
        return HopStarvation(tuple(w.so_far() for w in self.windows))


@dataclass(frozen=True)
class HopStarvation:
    readings: tuple[Starvation, ...]

    def of_cpu(self, cpu: int) -> float | None:
        """How long ``cpu``'s vCPU threads waited for a host CPU on both sides (None: not read)."""
        return starvation_ms(self.readings, cpu)

    def describe(self) -> str:
        return "; ".join(r.describe() for r in self.readings)
