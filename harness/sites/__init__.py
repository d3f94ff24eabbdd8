"""Where a cell's QEMUs run: one module per site kind, chosen by ``hosts:`` in matrix.yaml.

A kind is a class implementing :class:`harness.sites.base.Site`, registered here by name
with :func:`register_site`. The registry names modules rather than importing them, so that
loading a matrix never loads the runtime (SSH, namespaces, QEMU).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.matrix.model import Matrix
    from harness.sites.base import Site

SITES: dict[str, str] = {
    "local": "harness.sites.local:LocalSite",
    "netns": "harness.sites.netns:NamespaceSite",
    "lab": "harness.sites.lab:LabSite",
}
"""Every site kind: its ``hosts:`` name -> ``module:class``."""


def register_site(name: str, where: str) -> None:
    """Make the class at ``where`` (``module:class``) selectable as ``hosts: <name>``."""
    SITES[name] = where


def site_kind(name: str) -> type[Site]:
    """The class of site kind ``name`` (its module imported now)."""
    module, _, cls = SITES[name].partition(":")
    kind: type[Site] = getattr(import_module(module), cls)
    return kind


def site_for(matrix: Matrix) -> Site:
    """The site ``matrix`` runs its cells on (its ``hosts:``)."""
    return site_kind(matrix.hosts).from_matrix(matrix)
