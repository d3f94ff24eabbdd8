"""The inputs of a campaign, by number: input ``i`` of seed ``s`` is a pure function of both.

So any input can be made again: by the supervisor when a worker dies on it,
and by a rerun with the same seed (and the same real streams).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from harness.stream.fuzz.gen import random_stream
from harness.stream.fuzz.mutate import mutate
from harness.stream.fuzz.writer import Seed

GENERATED, MUTATED_GENERATED, MUTATED_REAL = "generated", "mutated-generated", "mutated-real"
_POOL = 32  # generated streams kept as splice donors


@dataclass(frozen=True)
class Plan:
    """Everything the inputs depend on."""

    seed: int
    count: int
    real: tuple[Seed, ...]
    fdts: tuple[bytes, ...]
    pool: tuple[Seed, ...] = ()

    @staticmethod
    def make(seed: int, count: int, real: Sequence[Seed], fdts: Sequence[bytes]) -> Plan:
        rng = random.Random(f"{seed}:pool")
        pool = tuple(random_stream(rng, fdts) for _ in range(_POOL))
        return Plan(seed, count, tuple(real), tuple(fdts), pool)


@dataclass(frozen=True)
class Input:
    index: int
    data: bytes
    origin: str
    how: str


def make_input(plan: Plan, index: int) -> Input:
    """Input ``index``: a generated stream (10%), or a mutated real seed or generated stream."""
    rng = random.Random(f"{plan.seed}:{index}")
    choice = rng.random()
    if choice < 0.1:
        return Input(index, random_stream(rng, plan.fdts).data, GENERATED, "as generated")
    donors = plan.pool + plan.real
    if plan.real and choice < 0.5:
        base, origin = rng.choice(plan.real), MUTATED_REAL
    else:
        base, origin = random_stream(rng, plan.fdts), MUTATED_GENERATED
    data, how = mutate(rng, base, donors)
    return Input(index, data, origin, f"{base.origin}: {how}")
