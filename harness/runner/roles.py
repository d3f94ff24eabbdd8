"""The role table: every QEMU a cell may start, which host of the pair it runs on, and whose
build and machine set-up it takes.

A cell has two sides: ``a`` (the source host) and ``b`` (the destination host). ``src`` runs
the guest first and ``dst`` receives it; ``back`` is a return destination on the source's side
(a ping-pong), ``again`` and ``onward`` are further destinations on the destination's side
(hops in a row on the destination's build). Everything that asks "where does this role run"
or "which build does it run" asks this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SideName = Literal["a", "b"]


@dataclass(frozen=True)
class Role:
    name: str
    title: str
    """How reports name it: "return destination"."""
    side: SideName
    """The host it runs on: ``a`` the source's, ``b`` the destination's."""
    like: Literal["src", "dst"]
    """Whose build and machine set-up it starts with."""


ROLES: dict[str, Role] = {r.name: r for r in (
    Role("src", "source", "a", "src"),
    Role("dst", "destination", "b", "dst"),
    Role("back", "return destination", "a", "src"),
    Role("again", "second destination", "b", "dst"),
    Role("onward", "third destination", "b", "dst"),
)}


def role(name: str) -> Role:
    """The role called ``name``; a ValueError naming the roles there are otherwise."""
    try:
        return ROLES[name]
    except KeyError:
        raise ValueError(f"role {name!r} is not one of {tuple(ROLES)}") from None


@dataclass(frozen=True)
class Hop:
    """One migration: from the QEMU of role ``src`` to the QEMU of role ``dst``."""

    src: str
    dst: str

    @property
    def title(self) -> str:
        return f"{ROLES[self.src].title} to {ROLES[self.dst].title}"
