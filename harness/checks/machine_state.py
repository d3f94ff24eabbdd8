"""The machine state compared across each hop, as checks: pure functions of migration results.

No QEMU here. Every field that differs between the source at its stop and the destination as
loaded, and that no rule of :mod:`harness.machinestate.rules` excuses, is a failed check
``machine state: <component> <field>`` with both values; a hop without a difference is one
passed check saying how much was compared and which differences were excused and why. This
sees a bug's cause every time (7.2's destination DECR unrelated to the source's), where the
guest shows its effect only when it trips over it.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.checks.result import CheckResult, not_applicable, not_measured
from harness.machinestate import MachineStateComparison
from harness.machinestate.compare import ABSENT
from harness.migration.run import MigrationResult

NAME = "machine state"
UNREADABLE_BY_DRIVER = "libvirt driver"
"""The start of ``machine_state_unread`` when the driver cannot read the source at its stop."""


def machine_state_checks(migrations: Sequence[MigrationResult]) -> list[CheckResult]:
    """The checks of every completed hop (hop numbers in the names when there are several)."""
    out: list[CheckResult] = []
    for number, result in enumerate(migrations, 1):
        hop = f" across hop {number}" if len(migrations) > 1 else ""
        state = result.machine_state
        if state is None:
            why = result.machine_state_unread or "not read"
            if why.startswith(UNREADABLE_BY_DRIVER):
                out.append(not_applicable(f"{NAME}{hop}", f"{why}: libvirt ends the source's QEMU before "
                                          "the migration call returns, so there is no source at its "
                                          "stop to compare; the direct driver's twin cell compares it"))
            else:
                out.append(not_measured(f"{NAME}{hop}", why))
            continue
        out.extend(_hop_checks(state, hop))
    return out


def _hop_checks(state: MachineStateComparison, hop: str) -> list[CheckResult]:
    compared = _compared(state)
    excused = "; ".join(f"{e.difference} (excused: {e.rule.component} {e.rule.field}, {e.reason})"
                        for e in state.excused)
    if not state.differences:
        return [CheckResult(f"{NAME}{hop}", True, "every field equal or excused by a rule",
                            f"{compared}; {len(state.excused)} differences excused",
                            f"{_read(state)}" + (f"; excused: {excused}" if excused else "")
                            + _one_sided(state))]
    return [CheckResult(f"{NAME}: {d.component} {d.field}{hop}", False, d.source, d.destination,
                        f"source at its stop {d.source}, destination as loaded {d.destination}; "
                        f"{compared}; {_read(state)}{_one_sided(state)}")
            for d in state.differences]


def _compared(state: MachineStateComparison) -> str:
    skipped = sum(f in state.unmodelled for c in state.source for f in c.fields)
    fields = (sum(len(c.fields) for c in state.source) - sum(d.source != ABSENT for d in state.one_sided)
              - skipped)
    return f"{len(state.source.components)} components, {fields} fields compared" + (
        f" ({', '.join(state.unmodelled)} not compared under KVM, where info registers prints QEMU's "
        "own timebase model, 0 on both sides: the migrated timebase is checked from the stream)"
        if skipped else "")


def _one_sided(state: MachineStateComparison) -> str:
    """The fields only one build's monitor prints, which were not compared."""
    if not state.one_sided:
        return ""
    named = ", ".join(f"{d.component} {d.field} ({'source' if d.destination == ABSENT else 'destination'}"
                      " only)" for d in state.one_sided)
    return f"; not compared, printed by one build only: {named}"


def _read(state: MachineStateComparison) -> str:
    commands = ", ".join(state.source.texts) or "HMP"
    return (f"{commands} on the {state.source.side} after its stop and on the "
            f"{state.destination.side} held paused after the load ({state.hold_ms:.0f} ms)")
