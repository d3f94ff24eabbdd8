"""What a stretch of inputs came to: outcomes by origin, refusals, the slowest input, peak RSS."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from harness.stream.fuzz.outcome import Kind, Outcome

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+|b?'[^']*'")  # elided from refusals, to group them


@dataclass
class Tally:
    """What a stretch of inputs came to; tallies add up."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (origin, kind) -> inputs
    refusals: Counter[str] = field(default_factory=Counter)  # StreamError reasons, numbers elided
    slowest: tuple[float, int] = (0.0, -1)  # seconds, input
    peak_rss_kb: int = 0
    peak_at: int = -1  # the input after which the peak was reached
    interrupted: bool = False

    def add(self, origin: str, outcome: Outcome, index: int) -> None:
        self.outcomes[origin, outcome.kind.value] += 1
        if outcome.kind is Kind.ERROR:
            self.refusals[_NUMBERS.sub("N", outcome.detail)[:80]] += 1
        if outcome.seconds > self.slowest[0]:
            self.slowest = (outcome.seconds, index)

    def merge(self, other: Tally) -> None:
        self.outcomes.update(other.outcomes)
        self.refusals.update(other.refusals)
        self.slowest = max(self.slowest, other.slowest)
        if other.peak_rss_kb > self.peak_rss_kb:
            self.peak_rss_kb, self.peak_at = other.peak_rss_kb, other.peak_at

    @property
    def inputs(self) -> int:
        return sum(self.outcomes.values())

    def kinds(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_, kind), n in self.outcomes.items():
            out[kind] += n
        return out

