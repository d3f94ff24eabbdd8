"""What every check is made of: its verdict, its result, its id, and the limits it applies.

No QEMU here. A check is a pure function that yields one :class:`CheckResult`;
``ok`` gives PASSED or FAILED, :func:`not_measured` and :func:`not_applicable`
the other two verdicts, with the reason as the evidence.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.checks.generic import Observations

TICK_PERIOD_MS = 250
"""The agent's per-CPU tick period (guests/golden/PROTOCOL.md)."""


@dataclass(frozen=True)
class Limits:
    """Bounds the checks apply, from matrix.yaml ``checks``."""

    tb_slack_ms: int
    tick_period_ms: int = TICK_PERIOD_MS

    def gap_bound_ms(self, downtime_ms: int) -> int:
        """The largest allowed gap between two ticks of one CPU across a migration."""
        return self.tick_period_ms + downtime_ms + self.tb_slack_ms


class Verdict(enum.Enum):
    """A check's verdict. Only PASSED is a pass: a check that measured nothing is NOT_MEASURED
    (it should have, and could not: the guest was silent, QEMU died, the host starved it) or
    NOT_APPLICABLE (there is nothing to measure in this cell, e.g. IPIs with one CPU)."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_MEASURED = "not measured"
    NOT_APPLICABLE = "not applicable"


HOST_OVERLOADED = "host-overloaded"
"""The ``cause`` of a check not measured because the host did not give the guest a CPU."""


def check_id(name: str) -> str:
    """A check's id, as known_failures entries name it: its name in lower case, dashes between
    words, apostrophes dropped (``QEMU's message`` -> ``qemus-message``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", "")).strip("-")


@dataclass(frozen=True)
class CheckResult:
    """One check's result: its name, verdict, bound (``before``), what it measured (``after``)
    and the evidence it was measured from.

    ``ok`` gives PASSED or FAILED; :func:`not_measured` and :func:`not_applicable` make the
    other two, with the reason as the evidence.
    """

    invariant: str
    ok: bool
    before: object
    after: object
    evidence: str
    verdict: Verdict = field(default=Verdict.PASSED)
    cause: str | None = None
    """For NOT_MEASURED: the id of the check whose failure kept this one from being measured
    (explained with it), or :data:`HOST_OVERLOADED`; None when nothing in the cell explains it."""

    def __post_init__(self) -> None:
        if self.verdict in (Verdict.PASSED, Verdict.FAILED):
            object.__setattr__(self, "verdict", Verdict.PASSED if self.ok else Verdict.FAILED)
        elif self.ok:
            raise ValueError(f"check {self.invariant!r}: ok with verdict {self.verdict.value}")

    @property
    def id(self) -> str:
        return check_id(self.invariant)

    @property
    def message(self) -> str:
        """What a known_failures entry's ``match`` is searched in."""
        return f"{self.invariant}: before={self.before!r} after={self.after!r}\nevidence: {self.evidence}"

    @property
    def counts_against(self) -> bool:
        """Failed or not measured: the cell cannot pass unless something explains it."""
        return self.verdict in (Verdict.FAILED, Verdict.NOT_MEASURED)


def not_measured(name: str, why: str, *, bound: object = "", cause: str | None = None) -> CheckResult:
    """A check that should have measured and could not, saying why."""
    return CheckResult(name, False, bound, "not measured", why, Verdict.NOT_MEASURED, cause)


def not_applicable(name: str, why: str, *, bound: object = "") -> CheckResult:
    """A check with nothing to measure in this cell, saying why."""
    return CheckResult(name, False, bound, "not applicable", why, Verdict.NOT_APPLICABLE)


Check = Callable[["Observations", Limits], CheckResult]
"""A generic check: a pure function of a migration's observations and the limits."""
