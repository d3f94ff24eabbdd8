"""fault: a fault injected into a real migration, to check that the harness tells the truth.

A QEMU killed or stopped (SIGKILL, SIGSTOP) at boot, mid-migration or while
the harness checks the guest must be reported as what it is: a crashed
QEMU (with how it ended and its last words) or a hung one (with the command
it did not answer), soon, and never as a quiet guest that a known failure
could swallow. A fault cell passes when the report is right; `goldmig
faults` runs them on any build and adds what the run kept and left behind.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.result import CheckResult, Limits
from harness.errors import GoldmigError, QemuCrashed, QemuUnresponsive
from harness.guest.agent import Agent
from harness.scenarios.declare import Scenario, Variant
from harness.scenarios.steps import boot, hop, observe, tick_gaps

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side

BANDWIDTH = 8 << 20
"""bytes/s: slow enough that the migration is still running when the fault comes."""
MIGRATE_S = 30.0
AFTER_START_S = 1.0
"""How long after ``cont`` (boot) or ``migrate`` (migrate) the fault comes."""
DETECT_S = {"kill": 3.0, "stop": 10.0}
"""How soon each kind of fault must be reported."""


@dataclass(frozen=True)
class Fault:
    target: str  # src | dst
    when: str  # boot | migrate | check
    action: str  # kill | stop

    @property
    def expected(self) -> type[GoldmigError]:
        return QemuCrashed if self.action == "kill" else QemuUnresponsive


@dataclass(frozen=True)
class FaultObservations:
    fault: Fault
    reported: str
    """The error the cell ended with, as ``ClassName: message`` ("" if none)."""
    detect_s: float | None
    """From the injection to the error."""

    def checks(self, limits: Limits) -> list[CheckResult]:
        fault = self.fault
        role_named = f"{fault.target} QEMU" in self.reported or (
            f"{'source' if fault.target == 'src' else 'destination'} QEMU" in self.reported)
        how = "killed by signal 9" if fault.action == "kill" else "did not answer QMP"
        first_line = self.reported.splitlines()[0] if self.reported else "nothing"
        right = self.reported.startswith(fault.expected.__name__) and role_named and how in self.reported
        return [
            CheckResult("the fault is reported as what it is", right,
                        f"{fault.expected.__name__} naming the {fault.target} QEMU and '{how}'",
                        first_line, "the error the cell ended with"),
            CheckResult("the fault is reported soon",
                        self.detect_s is not None and self.detect_s <= DETECT_S[fault.action],
                        f"<= {DETECT_S[fault.action]} s", self.detect_s,
                        "seconds from the injection to the error"),
        ]


class _Injection:
    """Signals ``target`` once, now or after a delay, and remembers when."""

    def __init__(self, target: Side, action: str) -> None:
        self._target = target
        self._signum = signal.SIGKILL if action == "kill" else signal.SIGSTOP
        self._timer: threading.Timer | None = None
        self.at: float | None = None

    def now(self) -> None:
        self.at = time.monotonic()
        self._target.send_signal(self._signum)

    def after(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self.now)
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()


def run(ctx: ScenarioContext, variant: Variant[Fault]) -> FaultObservations:
    fault = variant.data
    src, dst = ctx.start("src"), ctx.start("dst")
    injection = _Injection(src if fault.target == "src" else dst, fault.action)
    reported, detected = "", None
    try:
        if fault.when == "boot":
            injection.after(AFTER_START_S)
        before = boot(ctx, src)
        if fault.when == "migrate":
            src.monitor.cmd("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH})
            injection.after(AFTER_START_S)
        if fault.when == "check":
            result = ctx.migrate(src, dst, timeout=MIGRATE_S)
            injection.now()
            tick_gaps(Agent(src.console), Agent(dst.console), before.cpus, ctx.limits,
                      result.figures.downtime_ms)
        else:
            observe(ctx, src, dst, before, [hop(ctx, src, dst, before)])
    except GoldmigError as exc:
        detected = time.monotonic()
        reported = f"{type(exc).__name__}: {exc}"
    finally:
        injection.cancel()
    detect_s = None if detected is None or injection.at is None else round(detected - injection.at, 2)
    (ctx.rundir / "fault-reported.txt").write_text(reported or "nothing\n")
    (ctx.rundir / "fault-detect.json").write_text(json.dumps({"detect_s": detect_s}) + "\n")
    return FaultObservations(fault, reported, detect_s)


def _variant(target: str, when: str, action: str) -> Variant[Fault]:
    return Variant(f"{action}-{target}-{when}", Fault(target, when, action),
                   description=f"{'SIGKILL' if action == 'kill' else 'SIGSTOP'} of the {target} "
                               f"QEMU at {when}")


SCENARIO: Scenario[Fault] = Scenario(
    name="fault",
    description="a QEMU killed or stopped at boot, mid-migration or during the checks",
    run=run,
    variants=(
        _variant("src", "boot", "kill"),
        _variant("src", "migrate", "kill"),
        _variant("dst", "migrate", "kill"),
        _variant("dst", "check", "kill"),
        _variant("src", "boot", "stop"),
        _variant("src", "migrate", "stop"),
        _variant("dst", "migrate", "stop"),
        _variant("dst", "check", "stop"),
    ),
)
