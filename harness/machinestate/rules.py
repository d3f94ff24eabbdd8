"""Fields that may legitimately differ between the source at its stop and the destination
after the load, each with its reason.

A rule names the components it covers (an ``fnmatch`` pattern), the field, why the field
may differ, and, when it is excused only in some states, the condition. Everything not
excused here is a :class:`~harness.machinestate.compare.Difference`. A rule is written only
with the QEMU code that makes the field differ on a healthy pair; a difference that is a
QEMU bug (7.2's DECR, 10.0's MSR[ME]) stays a difference, declared as a known failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from harness.machinestate.model import Component

NO_RESERVATION = "ffffffffffffffff"


def _always(source: Component, destination: Component) -> bool:
    return True


def _none_on_destination(source: Component, destination: Component) -> bool:
    return destination.fields.get("RES") == NO_RESERVATION


@dataclass(frozen=True)
class Rule:
    """Field ``field`` of components matching ``component`` may differ, because ``reason``;
    only while ``when(source, destination)`` holds (``condition`` says when in words)."""

    component: str
    field: str
    reason: str
    condition: str = "always"
    when: Callable[[Component, Component], bool] = _always

    def covers(self, component: str, field: str) -> bool:
        return field == self.field and fnmatchcase(component, self.component)

    def excuses(self, source: Component, destination: Component, field: str) -> bool:
        return self.covers(source.name, field) and self.when(source, destination)

    def __str__(self) -> str:
        when = "" if self.condition == "always" else f" ({self.condition})"
        return f"{self.component} {self.field}{when}: {self.reason}"


RULES: tuple[Rule, ...] = (
    Rule("CPU *", "RES",
         "a reservation (larx) the source held at its stop may be gone on the destination: the "
         "architecture lets a reservation be lost at any time (the guest's stcx. then fails and "
         "it retries), and QEMU 9.0 and later drop it on purpose (target/ppc/machine.c: "
         "vmstate_ppc_cpu's field is VMSTATE_UNUSED, \"was reserve_addr\"; the cpu/reservation "
         "subsection is sent only under record/replay); seen on 10.0>10.0 hotplug-cpu-0ms, "
         "CPU 1 at c00000001fe71a00 on the source, none on the destination",
         condition="the destination holds no reservation (RES ffffffffffffffff)",
         when=_none_on_destination),
    Rule("CPU *", "RES length",
         "the length of a load-and-reserve (env->reserve_length, printed by QEMU 8.2 and later "
         "as RES <length>@<address>) is not in the stream: target/ppc/machine.c's "
         "vmstate_ppc_cpu carries env.reserve_addr only (9.0 and later not even that); with no "
         "reservation held on the destination the length is left over and never read",
         condition="the destination holds no reservation (RES ffffffffffffffff)",
         when=_none_on_destination),
    Rule("CPU *", "HF",
         "env->hflags, TCG's cache of translation flags, is not migrated: cpu_post_load "
         "recomputes it from MSR and the other migrated SPRs (hreg_compute_hflags via "
         "ppc_store_msr), so it follows fields that are compared themselves; its bit layout "
         "is each build's own (QEMU 5.2 prints 64 bits, 6.0 and later 32 bits, new layout)"),
    Rule("CPU *", "iidx",
         "the instruction MMU index is not migrated: hreg_compute_mem_idx derives it on load "
         "from MSR[PR,HV,IR] (compared themselves); its numbering is each build's own"),
    Rule("CPU *", "didx",
         "the data MMU index is not migrated: hreg_compute_mem_idx derives it on load from "
         "MSR[PR,HV,DR] (compared themselves); its numbering is each build's own"),
)
"""The rules in force; each excused difference names the one that excused it."""
