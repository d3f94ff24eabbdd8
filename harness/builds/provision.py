"""Turn a build spec from matrix.yaml into a runnable :class:`Build`."""

from __future__ import annotations

import os
from pathlib import Path

from harness.builds.debian import ensure_suite_root, package_version
from harness.builds.model import Build
from harness.builds.spec import BuildSpec, DebianSuiteBuild, HostPackageBuild, PathBuild
from harness.errors import BuildError


def provision(spec: BuildSpec) -> Build:
    """Make the build runnable (debootstrap on first use) and say where its QEMU is."""
    match spec:
        case HostPackageBuild():
            if not os.access(spec.binary, os.X_OK):
                raise BuildError(
                    f"build {spec.name!r}: {spec.binary} is missing; install Debian's "
                    "qemu-system-ppc package (`make setup` does)."
                )
            return Build(spec.name, Path("/"), spec.binary, package=package_version(Path("/")))
        case DebianSuiteBuild():
            root = ensure_suite_root(spec.suite, spec.mirror)
            return Build(spec.name, root, "/usr/bin/qemu-system-ppc64", package=package_version(root))
        case PathBuild():
            if not os.access(spec.binary, os.X_OK):
                raise BuildError(
                    f"build {spec.name!r}: binary {spec.binary} does not exist or is not "
                    "executable; fix `binary:` in matrix.yaml to point at your "
                    "build tree's qemu-system-ppc64."
                )
            if not spec.firmware.is_dir():
                raise BuildError(
                    f"build {spec.name!r}: firmware directory {spec.firmware} does not exist; "
                    "fix `firmware:` in matrix.yaml (a QEMU build tree's pc-bios directory)."
                )
            return Build(spec.name, Path("/"), str(spec.binary), firmware_dir=str(spec.firmware))
