"""Builds on a lab host: its own QEMU package, or a developer's build installed at a path there.

A lab host has a filesystem of its own, so nothing is provisioned from here:
the build must already be on the host, and is checked there.
"""

from __future__ import annotations

from pathlib import Path

from harness.builds.model import Build
from harness.builds.spec import BuildSpec, DebianSuiteBuild, HostPackageBuild, PathBuild
from harness.errors import BuildError
from harness.hosts.ssh import SshHost

_OWN_FILES = "runs a path build from its own filesystem, which cannot see this machine's"


def on_lab_host(spec: BuildSpec, host: SshHost) -> Build:
    """The build as it is installed on ``host``; :class:`BuildError` saying what is missing."""
    match spec:
        case HostPackageBuild():
            _require(host, spec.name, "-x", spec.binary, "install the qemu-system-ppc package "
                     "on it, or set `binary:` to where its qemu-system-ppc64 is")
            return Build(spec.name, Path("/"), spec.binary, package=_package_version(host))
        case PathBuild():
            _require(host, spec.name, "-x", str(spec.binary), f"a lab host {_OWN_FILES}; install "
                     "the build there at that path, or fix `binary:` in matrix.yaml "
                     "(goldmig patch: --candidate)")
            _require(host, spec.name, "-d", str(spec.firmware), f"a lab host {_OWN_FILES}; fix "
                     "`firmware:` in matrix.yaml (goldmig patch: --firmware): the build tree's "
                     "pc-bios directory on the lab host")
            return Build(spec.name, Path("/"), str(spec.binary), firmware_dir=str(spec.firmware))
        case DebianSuiteBuild():
            raise BuildError(f"build {spec.name!r} is a Debian suite root on this machine; "
                             "lab hosts run kind host or kind path builds")


def _require(host: SshHost, build: str, test: str, path: str, todo: str) -> None:
    if host.run_command(["test", test, path], timeout=30.0).returncode != 0:
        what = "an executable" if test == "-x" else "a directory"
        raise BuildError(f"build {build!r}: {path} is not {what} on lab host {host.name}; {todo}")


def _package_version(host: SshHost) -> str | None:
    """The Debian package version of qemu-system-ppc on the host, None if it has none."""
    proc = host.run_command(["dpkg-query", "-W", "-f", "${Version}", "qemu-system-ppc"], timeout=30.0)
    return proc.stdout.strip() or None if proc.returncode == 0 else None
