"""Who drives a cell's QEMUs: one module per driver kind, chosen by a group's ``drivers:`` in
matrix.yaml.

A kind is a class implementing :class:`harness.drivers.base.DriverKind` (and, once opened for
a cell, :class:`harness.drivers.base.Driver`), registered here by name with
:func:`register_driver`. The registry names modules rather than importing them, so that
loading a matrix never loads the runtime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.drivers.base import DriverKind

DRIVERS: dict[str, str] = {
    "qemu": "harness.drivers.qemu:QemuDriver",
    "libvirt": "harness.drivers.libvirt:LibvirtDriver",
}
"""Every driver kind: its ``drivers:`` name -> ``module:class``."""


def register_driver(name: str, where: str) -> None:
    """Make the class at ``where`` (``module:class``) selectable in a group's ``drivers:``."""
    DRIVERS[name] = where


def driver_kind(name: str) -> type[DriverKind]:
    """The class of driver kind ``name`` (its module imported now)."""
    module, _, cls = DRIVERS[name].partition(":")
    kind: type[DriverKind] = getattr(import_module(module), cls)
    return kind
