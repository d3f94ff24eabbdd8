"""Debian-suite builds: a debootstrap root per suite, cached and made once."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from harness.errors import BuildError
from harness.paths import cache_root

ROOT_PACKAGES = ("qemu-system-ppc", "openssh-server", "iproute2")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def suite_root_path(suite: str) -> Path:
    return cache_root() / "roots" / suite


def ensure_suite_root(suite: str, mirror: str = DEFAULT_MIRROR) -> Path:
    """The root filesystem of ``suite`` with QEMU in it; debootstraps it on first use.

    Safe to call from several processes at once (a file lock serialises the
    build); an interrupted build leaves only a temp dir that the next call
    removes.
    """
    root = suite_root_path(suite)
    marker = root / ".goldmig-complete"
    if marker.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return root
        _debootstrap(suite, mirror, root)
    return root


def _debootstrap(suite: str, mirror: str, root: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise BuildError(
            f"Debian suite build {suite!r}: debootstrap is not installed; "
            "run `make setup` (it installs the project's apt packages)."
        )
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    cmd = [
        "debootstrap", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}",
        suite, str(tmp), mirror,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
        raise BuildError(
            f"Debian suite build {suite!r} could not be provisioned from {mirror}: "
            f"debootstrap exited {proc.returncode}. Check the suite name and that the "
            "mirror is reachable. Last lines:\n  " + "\n  ".join(tail)
        )
    (tmp / ".goldmig-complete").write_text(suite + "\n")
    tmp.rename(root)


def package_version(root: Path, package: str = "qemu-system-ppc") -> str | None:
    """The installed version of ``package`` in ``root``'s dpkg database, if any."""
    proc = subprocess.run(
        ["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f=${Version}", package],
        capture_output=True, text=True,
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None
