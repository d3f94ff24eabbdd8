"""Where a cell's QEMUs run: one module per site kind, chosen by ``hosts:`` in matrix.yaml.

A kind is a class implementing :class:`harness.sites.base.Site`, registered by name in
:data:`SITES` (which names modules rather than importing them, so that loading a matrix
never loads the runtime).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.matrix.model import Cell, Matrix
    from harness.sites.base import Site

SITES: Registry[Site] = Registry({
    "local": "harness.sites.local:LocalSite",
    "netns": "harness.sites.netns:NamespaceSite",
    "lab": "harness.sites.lab:LabSite",
    "nested": "harness.sites.nested:NestedSite",
})
"""Every site kind: its ``hosts:`` name -> ``module:class``."""


def site_for(matrix: Matrix, cell: Cell | None = None) -> Site:
    """The site ``cell`` runs on (``kvm_hosts:`` for a KVM cell), or the matrix's ``hosts:``."""
    return SITES.load(matrix.hosts_of(cell) if cell else matrix.hosts).from_matrix(matrix)
