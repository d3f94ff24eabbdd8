"""How long the harness waits for each CPU's first tick after a hop (steps.tick_deadline and
tick_gaps): one tick period past the gap bound, longer by the host's measured starvation of that
CPU's vCPU thread, never more than a second past it. No QEMU here: the consoles and the host's
starvation readings are stand-ins."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from harness.checks.result import Limits
from harness.guest.agent import Agent
from harness.guest.protocol import Tick
from harness.scenarios.steps import LATE_MARGIN_MAX_S, LATE_MARGIN_S, tick_deadline, tick_gaps


class Watch:
    """A hop's starvation windows whose readings, one per look, are ``starved_ms`` in turn (the
    last one repeated); None: the CPU's thread was not read."""

    def __init__(self, *starved_ms: float | None) -> None:
        self.readings = list(starved_ms)
        self.looks = 0

    def so_far(self) -> Any:
        reading = self.readings[min(self.looks, len(self.readings) - 1)]
        self.looks += 1
        return SimpleNamespace(of_cpu=lambda cpu: reading)

    def stop(self) -> Any:
        return SimpleNamespace(of_cpu=lambda cpu: self.readings[-1], describe=lambda: "host figures")


@pytest.mark.parametrize(("starved_ms", "margin_s"), [
    (0.0, LATE_MARGIN_S),
    (300.0, LATE_MARGIN_S + 0.3),
    (5000.0, LATE_MARGIN_MAX_S),
    (None, LATE_MARGIN_MAX_S),
])
def test_the_margin_past_the_bound_grows_with_the_hosts_starvation_up_to_a_second(
        starved_ms: float | None, margin_s: float) -> None:
    assert tick_deadline(100.0, Watch(starved_ms), cpu=0) == pytest.approx(100.0 + margin_s)  # type: ignore[arg-type]


def test_without_host_figures_the_wait_is_the_longest() -> None:
    assert tick_deadline(100.0, None, cpu=0) == 100.0 + LATE_MARGIN_MAX_S


class SilentConsole:
    """A destination console on which no tick ever comes; records each wait it was asked for."""

    name = "dst"

    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait_for(self, kind: type, match: Any, timeout: float) -> None:
        self.waits.append(timeout)
        return None


def test_a_cpu_the_host_kept_waiting_meanwhile_is_waited_for_longer_then_called_tickless() -> None:
    source: Any = SimpleNamespace(name="src", messages=lambda: [Tick(seq=1, cpu=0, n=7, tb=1)])
    destination: Any = SilentConsole()
    limits = Limits(tb_slack_ms=500)
    watch = Watch(0.0, 300.0, 300.0)  # the vCPU thread waited 300 ms for a host CPU during the first wait

    started = time.monotonic()
    gaps = tick_gaps(Agent(source), Agent(destination), (0,), limits, downtime_ms=20,
                     watch=watch)  # type: ignore[arg-type]

    bound_s = limits.gap_bound_ms(20) / 1000
    first, second = destination.waits
    assert first == pytest.approx(bound_s + LATE_MARGIN_S, abs=0.05)
    assert second == pytest.approx(bound_s + LATE_MARGIN_S + 0.3 - (time.monotonic() - started), abs=0.05)
    assert gaps[0].first_after is None and gaps[0].last_before.n == 7
    assert gaps[0].starved_ms == 300.0
