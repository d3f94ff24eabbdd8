"""How a scenario declares itself: its name, its variants, the machine each side needs.

Declarations are plain frozen data with no runtime behind them, so the
matrix loader can validate scenario and variant names (and list cells)
without importing anything that drives QEMU. The run function receives the
runtime context (:class:`harness.runner.context.ScenarioContext`) when a cell runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from harness.checks.result import CheckResult, Limits
from harness.qemu.machine import Dimm

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext

NAME = re.compile(r"^[a-z][a-z0-9]*$")
"""Scenario names: no dash, so ``scenario-variant`` in a cell id splits unambiguously."""
VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")

T = TypeVar("T")


class ScenarioResult(Protocol):
    """What a scenario saw; it knows the named checks that must hold for it."""

    def checks(self, limits: Limits) -> list[CheckResult]: ...


@dataclass(frozen=True)
class MachineChange:
    """How a variant changes one side's machine set-up (on top of the matrix's guest)."""

    properties: tuple[tuple[str, str], ...] = ()
    """Machine properties (``-M pseries-X.Y,key=value``); each must exist on that side's
    machine type, else the cell is skipped with that reason."""
    devices: tuple[str, ...] = ()
    """Extra ``-device`` arguments, after the matrix's devices."""
    smp: int | None = None
    maxcpus: int | None = None
    maxmem_mb: int | None = None
    memory_slots: int = 0
    """Memory hotplug room: DIMM slots up to ``maxmem_mb`` (both or neither)."""
    dimms: tuple[Dimm, ...] = ()
    """DIMMs on that side from the start (a destination given its source's plugged DIMM)."""


@dataclass(frozen=True)
class Needs:
    """What a cell must have to be possible; otherwise it is skipped with the reason."""

    local_builds: bool = False
    """Records reference streams or dumps with the builds on this machine (not lab hosts)."""
    machine_properties: tuple[str, ...] = ()
    """Properties both sides' machine type must have (e.g. ``ic-mode``)."""
    min_qemu: tuple[int, int] | None = None
    """Both builds at least this QEMU version (major, minor)."""
    min_machine: tuple[int, int] | None = None
    """The machine type at least pseries-X.Y (a value older types refuse, e.g. ic-mode=xive)."""
    accel: str | None = None
    """Only under this accelerator (e.g. ``kvm`` for checks of host mappings)."""
    in_kernel_irqchip: bool = False
    """KVM's in-kernel interrupt controller device (XIVE or XICS in the host kernel)."""

    def merged(self, other: Needs) -> Needs:
        """Both sets of needs at once (a scenario's and its variant's)."""
        return Needs(
            local_builds=self.local_builds or other.local_builds,
            machine_properties=tuple(dict.fromkeys(self.machine_properties + other.machine_properties)),
            min_qemu=_newest(self.min_qemu, other.min_qemu),
            min_machine=_newest(self.min_machine, other.min_machine),
            accel=other.accel or self.accel,
            in_kernel_irqchip=self.in_kernel_irqchip or other.in_kernel_irqchip,
        )


@dataclass(frozen=True)
class Variant(Generic[T]):
    """One way to run a scenario. ``data`` is what the run function reads (typed per scenario)."""

    name: str
    data: T
    source: MachineChange = MachineChange()
    destination: MachineChange | None = None
    """None: the same change as the source (sides that differ on purpose say so)."""
    needs: Needs = Needs()
    description: str = ""

    def change_for(self, side: str) -> MachineChange:
        """The change for side ``src`` or ``dst``."""
        if side == "dst" and self.destination is not None:
            return self.destination
        return self.source


@dataclass(frozen=True)
class Scenario(Generic[T]):
    """A declared scenario: ``run(ctx, variant)`` drives the cell and returns what it saw."""

    name: str
    description: str
    run: Callable[[ScenarioContext, Variant[T]], ScenarioResult]
    variants: tuple[Variant[T], ...]
    needs: Needs = field(default_factory=Needs)

    def __post_init__(self) -> None:
        # Declarations are code: a bad one is the developer's mistake, caught at import.
        if not NAME.match(self.name):
            raise ValueError(f"scenario name {self.name!r} must match {NAME.pattern}")
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"scenario {self.name}: variants must be non-empty and unique: {names}")
        for name in names:
            if name and not VARIANT_NAME.match(name):
                raise ValueError(f"scenario {self.name}: variant {name!r} must match {VARIANT_NAME.pattern}")
        if "" in names and len(names) > 1:
            raise ValueError(f"scenario {self.name}: an unnamed variant must be the only one")

    def variant(self, name: str) -> Variant[T]:
        return next(v for v in self.variants if v.name == name)

    def needs_of(self, variant: str) -> Needs:
        return self.needs.merged(self.variant(variant).needs)


def _newest(*versions: tuple[int, int] | None) -> tuple[int, int] | None:
    given = [v for v in versions if v is not None]
    return max(given) if given else None


def single(data: Any = None) -> tuple[Variant[Any], ...]:
    """The variants of a scenario that has no variants: one, unnamed."""
    return (Variant("", data),)
