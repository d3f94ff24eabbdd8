"""Debian-suite builds: a debootstrap root per suite, cached and made once.

A root carries the sha256 of what decides how its QEMU behaves, checked on
every use (:mod:`harness.cache`): the QEMU binary, every firmware file under
``usr/share/qemu`` (SLOF, VOF, option ROMs) and dpkg's status file, which
holds the exact version of every installed package, so the libraries QEMU
links are pinned by version. The libraries' own bytes are not hashed (40 to
45 MB more per check, found only by running the dynamic loader in the root);
a damaged library makes QEMU fail to start or crash, which is loud. Before
the hashes are first recorded, the hashed files that a package installed are
checked against the md5sums dpkg keeps from the package.
"""

from __future__ import annotations

import fcntl
import hashlib
import shlex
import shutil
import subprocess
from pathlib import Path

from harness.cache import damage, seal, sums_path
from harness.errors import BuildError, CacheError
from harness.paths import cache_root

ROOT_PACKAGES = ("qemu-system-ppc", "openssh-server", "iproute2")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
QEMU_BINARY = "usr/bin/qemu-system-ppc64"
FIRMWARE_DIR = "usr/share/qemu"
DPKG_STATUS = "var/lib/dpkg/status"
_MARKER = ".goldmig-complete"


def suite_root_path(suite: str, backports: bool = False) -> Path:
    return cache_root() / "roots" / (f"{suite}+backports" if backports else suite)


def ensure_suite_root(suite: str, mirror: str = DEFAULT_MIRROR, backports: bool = False) -> Path:
    """The root filesystem of ``suite`` with QEMU in it; debootstraps it on first use. With
    ``backports``, QEMU is then upgraded from ``<suite>-backports`` (a root of its own).

    Safe to call from several processes at once (a file lock serialises the
    build); an interrupted build leaves only a temp dir that the next call
    removes. A root whose QEMU, firmware or package versions no longer match
    their recorded hashes is refused with :class:`CacheError` naming the
    command that clears it: it is not rebuilt in place, since another run may
    be using it.
    """
    root = suite_root_path(suite, backports)
    marker = root / _MARKER
    if marker.exists() and sums_path(root).exists():
        _check(suite, root)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            _debootstrap(suite, mirror, root, backports)
        if sums_path(root).exists():
            _check(suite, root)
        else:
            _seal(suite, root)
    return root


def _seal(suite: str, root: Path) -> None:
    """Record the hashes of the root's QEMU, firmware and dpkg status, once they check out
    against dpkg's md5sums (a root made before goldmig recorded hashes is sealed here too)."""
    firmware = (p for p in (root / FIRMWARE_DIR).rglob("*") if p.is_file() and not p.is_symlink())
    files = [QEMU_BINARY, DPKG_STATUS, *sorted(str(p.relative_to(root)) for p in firmware)]
    packaged = _dpkg_md5sums(root)
    for name in files:
        path = root / name
        if not path.is_file():
            raise _refusal(suite, root, f"{name} is missing")
        with path.open("rb") as f:
            md5 = hashlib.file_digest(f, "md5").hexdigest()
        if packaged.get(name, md5) != md5:
            raise _refusal(suite, root, f"{name} does not match the md5sum dpkg recorded from its package")
    seal(root, files, meta={"suite": suite, "qemu-system-ppc": package_version(root)})


def _dpkg_md5sums(root: Path) -> dict[str, str]:
    """Path (relative to the root) -> md5 of every file the installed packages shipped."""
    sums = {}
    for listing in (root / "var/lib/dpkg/info").glob("*.md5sums"):
        for line in listing.read_text(errors="replace").splitlines():
            md5, _, name = line.partition("  ")
            sums[name] = md5
    return sums


def _check(suite: str, root: Path) -> None:
    why = damage(root)
    if why is not None:
        raise _refusal(suite, root, why)


def _refusal(suite: str, root: Path, why: str) -> CacheError:
    clear = shlex.join(["rm", "-rf", str(root), str(sums_path(root))])
    return CacheError(
        f"Debian suite root {root} ({suite}) is damaged: {why}. goldmig does not rebuild a "
        f"root in place, as another run may be using it; when no goldmig run is, remove it "
        f"with `{clear}` and the next run debootstraps it again."
    )


def _debootstrap(suite: str, mirror: str, root: Path, backports: bool) -> None:
    if shutil.which("debootstrap") is None:
        raise BuildError(
            f"Debian suite build {suite!r}: debootstrap is not installed; "
            "run `make setup` (it installs the project's apt packages)."
        )
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    sums_path(root).unlink(missing_ok=True)
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
    if backports:
        try:
            _from_backports(suite, mirror, tmp)
        except BuildError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    (tmp / _MARKER).write_text(suite + "\n")
    tmp.rename(root)


def _from_backports(suite: str, mirror: str, root: Path) -> None:
    """QEMU upgraded in ``root`` from ``<suite>-backports`` (debootstrap's --extra-suites mixes
    the two suites' packages without regard for what breaks what: seen with trixie)."""
    (root / "etc/apt/sources.list.d/backports.list").write_text(f"deb {mirror} {suite}-backports main\n")
    proc = apt_install_in(root, f"-t {suite}-backports qemu-system-ppc")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
        raise BuildError(f"Debian suite build {suite!r} with backports: installing qemu-system-ppc "
                         f"from {suite}-backports failed (exit {proc.returncode}). Does {mirror} carry "
                         f"{suite}-backports? Last lines:\n  " + "\n  ".join(tail))


def apt_install_in(root: Path, packages: str, then: str = "") -> subprocess.CompletedProcess[str]:
    """``apt-get update`` and ``apt-get install <packages>`` (then the shell command ``then``)
    chrooted into ``root``, with a /proc of its own in a private mount namespace (nothing
    stays mounted)."""
    script = ("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
              f"--no-install-recommends {packages}" + (f" && {then}" if then else ""))
    return subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount -t proc proc {shlex.quote(str(root / 'proc'))} && "
                           f"chroot {shlex.quote(str(root))} sh -c {shlex.quote(script)}"],
                          capture_output=True, text=True)


def package_version(root: Path, package: str = "qemu-system-ppc") -> str | None:
    """The installed version of ``package`` in ``root``'s dpkg database, if any."""
    proc = subprocess.run(
        ["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f=${Version}", package],
        capture_output=True, text=True,
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None
