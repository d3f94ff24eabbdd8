"""The build kinds: ``kind:`` in matrix.yaml -> the module and class that implement it
(:class:`harness.builds.spec.BuildSpec`); a kind is imported when a matrix declares a build
of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.builds.spec import BuildSpec

BUILD_KINDS: Registry[BuildSpec] = Registry({
    "host": "harness.builds.host_package:HostPackageBuild",
    "debian": "harness.builds.debian_suite:DebianSuiteBuild",
    "path": "harness.builds.path_build:PathBuild",
    "source": "harness.builds.source_build:SourceBuild",
})
"""Every build kind: its ``kind:`` name -> ``module:class``."""
