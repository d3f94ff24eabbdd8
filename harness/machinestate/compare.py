"""The source's machine state at its stop against the destination's after the load.

:func:`compare` gives the differences no rule excuses (the ones a check fails on),
:func:`excused` the ones a rule excuses, with the rule; :func:`compare_all` both, as the
:class:`MachineStateComparison` a migration's result carries.

A field that only one build's monitor prints (QEMU 11.1's ``TB_OFFSET`` against 10.2's
``info registers``) says nothing about the migration: it is set aside as not compared, and
named, rather than taken for a difference. A component one side lacks is a difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.machinestate.model import Component, MachineState
from harness.machinestate.rules import RULES, Rule

ABSENT = "(absent)"
"""The value of a field, or of a whole component's ``present`` field, that one side lacks."""
PRESENT = "present"


@dataclass(frozen=True)
class Difference:
    """``field`` of ``component`` reads ``source`` on the source and ``destination`` on the
    destination (``(absent)`` where one side does not have it)."""

    component: str
    field: str
    source: str
    destination: str

    def __str__(self) -> str:
        return f"{self.component} {self.field}: source {self.source}, destination {self.destination}"


@dataclass(frozen=True)
class Excused:
    """A difference that ``rule`` excuses."""

    difference: Difference
    rule: Rule

    @property
    def reason(self) -> str:
        return self.rule.reason


@dataclass(frozen=True)
class MachineStateComparison:
    """Both states of one hop, what differs, what was excused and why, and how long the
    destination was held paused so it could be read."""

    source: MachineState
    destination: MachineState
    differences: tuple[Difference, ...]
    excused: tuple[Excused, ...]
    hold_ms: float
    """From the destination seen paused after the load to its ``cont`` returning (0 when the
    migration was not live: the destination stays paused for the caller anyway)."""
    one_sided: tuple[Difference, ...] = ()
    """Fields of a component both sides have that only one side's QEMU prints: not compared."""
    unmodelled: tuple[str, ...] = ()
    """Fields not compared because the accelerator does not keep them where QEMU prints them."""


KVM_UNMODELLED = ("TBU", "TB", "DECR")
"""Under KVM, ``info registers`` prints QEMU's own timebase and decrementer model (hw/ppc/ppc.c,
from the virtual clock), which KVM does not run: 0 on both sides, whatever the guest's timebase."""


def compare(source: MachineState, destination: MachineState,
            rules: tuple[Rule, ...] = RULES) -> list[Difference]:
    """Every difference between ``source`` and ``destination`` that no rule excuses."""
    return list(compare_all(source, destination, 0.0, rules).differences)


def excused(source: MachineState, destination: MachineState,
            rules: tuple[Rule, ...] = RULES) -> list[Excused]:
    """Every difference a rule excuses, with the rule."""
    return list(compare_all(source, destination, 0.0, rules).excused)


def compare_all(source: MachineState, destination: MachineState, hold_ms: float,
                rules: tuple[Rule, ...] = RULES, unmodelled: tuple[str, ...] = ()) -> MachineStateComparison:
    differences: list[Difference] = []
    excuses: list[Excused] = []
    one_sided: list[Difference] = []
    names = list(source.names) + [n for n in destination.names if n not in source.names]
    for name in names:
        src, dst = source.get(name), destination.get(name)
        if src is None or dst is None:
            differences.append(Difference(name, PRESENT, "yes" if src else ABSENT,
                                          "yes" if dst else ABSENT))
            continue
        for field, (a, b) in _fields(src, dst).items():
            if a == b or field in unmodelled:
                continue
            difference = Difference(name, field, a, b)
            rule = next((r for r in rules if r.excuses(src, dst, field)), None)
            if ABSENT in (a, b):
                one_sided.append(difference)
            elif rule is None:
                differences.append(difference)
            else:
                excuses.append(Excused(difference, rule))
    return MachineStateComparison(source, destination, tuple(differences), tuple(excuses), hold_ms,
                                  tuple(one_sided), unmodelled)


def _fields(src: Component, dst: Component) -> dict[str, tuple[str, str]]:
    keys = list(src.fields) + [k for k in dst.fields if k not in src.fields]
    return {k: (src.fields.get(k, ABSENT), dst.fields.get(k, ABSENT)) for k in keys}
