"""Turn a build spec from matrix.yaml into a runnable :class:`Build`."""

from __future__ import annotations

import os
from pathlib import Path

from harness.builds.debian import ensure_suite_root, package_version
from harness.builds.model import Build
from harness.builds.spec import BuildSpec, DebianSuiteBuild, HostPackageBuild, PathBuild
from harness.builds.tree import own_dirs
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
            binary, firmware = _real(spec.binary), _real(spec.firmware)
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                raise BuildError(
                    f"build {spec.name!r}: binary {spec.binary} does not exist or is not an "
                    "executable file; fix `binary:` in matrix.yaml (goldmig patch: --candidate) "
                    "to point at your build tree's qemu-system-ppc64."
                )
            if not firmware.is_dir():
                raise BuildError(
                    f"build {spec.name!r}: firmware directory {spec.firmware} does not exist; "
                    "fix `firmware:` in matrix.yaml (goldmig patch: --firmware): a QEMU build "
                    "tree's pc-bios directory."
                )
            return Build(spec.name, Path("/"), str(binary), firmware_dir=str(firmware),
                         own_dirs=own_dirs(binary, firmware))


def _real(path: Path) -> Path:
    """``path`` with ``~`` expanded and symlinks resolved (a host's view binds real paths)."""
    return Path(os.path.realpath(path.expanduser()))
