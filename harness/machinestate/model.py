"""The frozen model of one QEMU's machine state: components, each with named fields.

Values are kept as QEMU printed them (hex without ``0x``, decimal where QEMU prints
decimal: ``TB``, ``DECR``), so a difference quotes QEMU's own text; rules that need a
number convert it (:func:`as_int`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from harness.errors import HarnessError


class MachineStateError(HarnessError):
    """QEMU's machine-state text could not be understood: names the command, the line and why.

    A harness error (Allure "broken"): the parser does not know this build's format, which
    says nothing about the migration."""

    def __init__(self, command: str, problem: str, line: str | None = None) -> None:
        self.command = command
        self.problem = problem
        self.line = line
        where = f" in line {line!r}" if line is not None else ""
        super().__init__(f"HMP {command!r}: {problem}{where}")


def _frozen(fields: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(fields))


@dataclass(frozen=True)
class Component:
    """One part of the machine (``CPU 0``, ``ICS``, ...) and its fields in QEMU's order."""

    name: str
    fields: Mapping[str, str] = field(default_factory=dict)
    command: str = ""
    """The HMP command that printed it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", _frozen(self.fields))

    def __getitem__(self, name: str) -> str:
        return self.fields[name]


@dataclass(frozen=True)
class MachineState:
    """What one QEMU reported at one moment: its components by name, and the raw texts."""

    side: str
    """Who was read: ``source`` or ``destination``, with the QEMU's role (``dst``, ``back``)."""
    components: tuple[Component, ...]
    texts: Mapping[str, str] = field(default_factory=dict)
    """HMP command -> the text QEMU printed (kept as evidence)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", _frozen(self.texts))
        names = [c.name for c in self.components]
        if len(names) != len(set(names)):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise MachineStateError("(all)", f"components named twice: {dup}")

    def __iter__(self) -> Iterator[Component]:
        return iter(self.components)

    def get(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def __getitem__(self, name: str) -> Component:
        found = self.get(name)
        if found is None:
            raise KeyError(f"{self.side} has no component {name!r}")
        return found

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def evidence(self) -> str:
        """The raw texts, one section per command (what is kept in the run directory)."""
        return "".join(f"### {command}\n{text.rstrip()}\n\n" for command, text in self.texts.items())

