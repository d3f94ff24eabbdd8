"""The build kinds: ``kind:`` in matrix.yaml -> the module and class that implement it.

The registry names modules rather than importing them, so that listing the kinds costs
nothing; a kind is imported when a matrix declares a build of it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.builds.spec import BuildSpec

BUILD_KINDS: dict[str, str] = {
    "host": "harness.builds.host_package:HostPackageBuild",
    "debian": "harness.builds.debian_suite:DebianSuiteBuild",
    "path": "harness.builds.path_build:PathBuild",
}
"""Every build kind: its ``kind:`` name -> ``module:class``."""


def register_build_kind(name: str, where: str) -> None:
    """Make the class at ``where`` (``module:class``) a ``kind:`` of matrix.yaml's builds."""
    BUILD_KINDS[name] = where


def build_kind(name: str) -> type[BuildSpec]:
    """The class of build kind ``name`` (its module imported now)."""
    module, _, cls = BUILD_KINDS[name].partition(":")
    kind: type[BuildSpec] = getattr(import_module(module), cls)
    return kind
