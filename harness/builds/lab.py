"""What every build kind asks of a lab host: a lab host has a filesystem of its own, so
nothing is provisioned from here: a build must already be on the host, and is checked there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import BuildError

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost


def require_on_lab_host(host: SshHost, build: str, test: str, path: str, todo: str) -> None:
    """A BuildError saying ``todo`` unless ``test -<test> path`` holds on ``host``."""
    if host.run_command(["test", test, path], timeout=30.0).returncode != 0:
        what = "an executable" if test == "-x" else "a directory"
        raise BuildError(f"build {build!r}: {path} is not {what} on lab host {host.name}; {todo}")


def lab_package_version(host: SshHost) -> str | None:
    """The Debian package version of qemu-system-ppc on the host, None if it has none."""
    proc = host.run_command(["dpkg-query", "-W", "-f", "${Version}", "qemu-system-ppc"], timeout=30.0)
    return proc.stdout.strip() or None if proc.returncode == 0 else None
