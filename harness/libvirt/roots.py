"""Where each side's libvirtd comes from: the same Debian release as its QEMU.

A Debian-suite build runs its libvirtd from a root of its own,
``roots/<suite>-libvirt``: a copy of the suite's sealed root with
:data:`LIBVIRT_PACKAGES` installed, so the plain root (and every cell of the
direct driver) stays exactly as it was. The copy must keep the suite root's
QEMU and firmware byte for byte (checked before it is sealed), so a cell
under either driver runs the same QEMU. The host build uses the host's own
libvirtd (``make setup`` installs it).
"""

from __future__ import annotations

import fcntl
import filecmp
import os
import pwd
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from harness.builds.debian import (
    DPKG_STATUS,
    FIRMWARE_DIR,
    QEMU_BINARY,
    apt_install_in,
    ensure_suite_root,
    package_version,
    suite_root_path,
)
from harness.builds.debian_suite import DebianSuiteBuild
from harness.builds.host_package import HostPackageBuild
from harness.builds.model import Build
from harness.builds.spec import BuildSpec
from harness.cache import damage, seal, sums_path
from harness.errors import BuildError, CacheError

LIBVIRT_PACKAGES = ("libvirt-daemon", "libvirt-daemon-driver-qemu")
LIBVIRTD = "usr/sbin/libvirtd"
QEMU_USER = "libvirt-qemu"
_MARKER = ".goldmig-libvirt-complete"


def libvirt_build(spec: BuildSpec, build: Build) -> Build:
    """``build`` as the libvirt driver runs it: in a root whose libvirtd is its release's.

    Raises :class:`BuildError` for builds that have no such root yet (path builds)."""
    match spec:
        case HostPackageBuild():
            if not (Path("/") / LIBVIRTD).exists():
                raise BuildError(f"build {spec.name!r} under the libvirt driver needs the host's "
                                 f"/{LIBVIRTD}: run `make setup` (it installs "
                                 f"{' '.join(LIBVIRT_PACKAGES)})")
            try:
                pwd.getpwnam(QEMU_USER)
            except KeyError:
                raise BuildError(f"build {spec.name!r} under the libvirt driver: the host has no "
                                 f"user {QEMU_USER}, which libvirt's QEMU driver resolves at start; "
                                 "run `make setup` (target libvirt-user)") from None
            return build
        case DebianSuiteBuild():
            return replace(build, root=ensure_libvirt_root(spec.suite, spec.mirror, spec.backports))
    raise BuildError(f"build {spec.name!r} is a path build: the libvirt driver runs Debian-suite "
                     "and host builds only (the host's libvirtd with a build tree as <emulator> "
                     "is not written yet)")


def libvirt_root_path(suite: str, backports: bool = False) -> Path:
    base = suite_root_path(suite, backports)
    return base.with_name(f"{base.name}-libvirt")


def ensure_libvirt_root(suite: str, mirror: str, backports: bool = False) -> Path:
    """The suite's root plus libvirt, made once (under a lock) and checked on every use."""
    root = libvirt_root_path(suite, backports)
    if (root / _MARKER).exists():
        _check(suite, root)
        return root
    base = ensure_suite_root(suite, mirror, backports)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / _MARKER).exists():
            _make(suite, base, root)
    _check(suite, root)
    return root


def _make(suite: str, base: Path, root: Path) -> None:
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(tmp)], check=True)
    (tmp / ".goldmig-complete").unlink(missing_ok=True)
    policy = tmp / "usr/sbin/policy-rc.d"  # no service may start inside the build root
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copyfile("/etc/resolv.conf", tmp / "etc/resolv.conf")
    # The QEMU driver resolves its user at start; libvirt-daemon-system would make it (and
    # services), and only some releases' driver packages do (trixie's does, bullseye's not).
    proc = apt_install_in(tmp, " ".join(LIBVIRT_PACKAGES), then=(
        f"(getent group {QEMU_USER} >/dev/null || groupadd --system {QEMU_USER}) && "
        f"(getent passwd {QEMU_USER} >/dev/null || useradd --system --gid {QEMU_USER} "
        f"--home-dir /var/lib/libvirt --no-create-home --shell /usr/sbin/nologin {QEMU_USER})"))
    policy.unlink()
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
        raise BuildError(f"libvirt for Debian {suite}: apt-get install {' '.join(LIBVIRT_PACKAGES)} "
                         "in a copy of its root failed:\n  " + "\n  ".join(tail))
    changed = [name for name in (QEMU_BINARY, *_firmware(base))
               if not filecmp.cmp(base / name, tmp / name, shallow=False)]
    if changed or package_version(tmp) != package_version(base):
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"installing libvirt into Debian {suite}'s root changed its QEMU "
                         f"({', '.join(changed) or 'qemu-system-ppc version'}); the libvirt "
                         "driver would not run the same QEMU as the direct one")
    files = [QEMU_BINARY, LIBVIRTD, DPKG_STATUS, *_firmware(tmp)]
    seal(tmp, files, meta={"suite": suite, "qemu-system-ppc": package_version(tmp),
                           "libvirt-daemon": package_version(tmp, "libvirt-daemon")})
    os.replace(sums_path(tmp), sums_path(root))
    (tmp / _MARKER).write_text(suite + "\n")
    tmp.rename(root)


def _firmware(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / FIRMWARE_DIR).rglob("*")
                  if p.is_file() and not p.is_symlink())


def _check(suite: str, root: Path) -> None:
    why = damage(root)
    if why is not None:
        clear = shlex.join(["rm", "-rf", str(root), str(sums_path(root))])
        raise CacheError(f"libvirt root {root} ({suite}) is damaged: {why}. It is not rebuilt in "
                         f"place, as another run may be using it; when no goldmig run is, remove "
                         f"it with `{clear}` and the next run makes it again.")
