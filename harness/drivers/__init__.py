"""Who drives a cell's QEMUs: one module per driver kind, chosen by a group's ``drivers:`` in
matrix.yaml.

A kind is a class implementing :class:`harness.drivers.base.DriverKind` (and, once opened for
a cell, :class:`harness.drivers.base.Driver`), registered by name in :data:`DRIVERS` (which
names modules rather than importing them, so that loading a matrix never loads the runtime).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.drivers.base import DriverKind

DRIVERS: Registry[DriverKind] = Registry({
    "qemu": "harness.drivers.qemu:QemuDriver",
    "libvirt": "harness.drivers.libvirt:LibvirtDriver",
})
"""Every driver kind: its ``drivers:`` name -> ``module:class``."""
