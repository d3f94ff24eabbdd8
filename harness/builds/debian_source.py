"""Debian's QEMU source package, fetched and unpacked into the cache for ``kind: source``.

apt's ordinary client fetches it with a private deb-src-only source list and state
directory, so the host's apt configuration is left alone; ``dpkg-source -x`` unpacks it
with Debian's patches applied, under ``~/.cache/goldmig/sources/qemu-<suite>/``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.cache import ensure_dir
from harness.errors import BuildError
from harness.paths import cache_root

DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_TIMEOUT_S = 600


def qemu_source(suite: str, mirror: str = DEFAULT_MIRROR, version: str | None = None) -> Path:
    """The unpacked qemu source package of ``suite`` (its newest, or ``version`` when given: a
    suite such as sid can carry several), a tree for ``kind: source``, fetched on first use."""
    return ensure_dir(_source_dir(suite, version), ["configure", "VERSION"],
                      lambda into: _unpack(suite, mirror, version, into))


def cached_qemu_source(suite: str, version: str | None = None) -> Path | None:
    """The unpacked source of ``suite`` if it is in the cache (nothing fetched)."""
    tree = _source_dir(suite, version)
    return tree if (tree / "configure").is_file() else None


def _source_dir(suite: str, version: str | None) -> Path:
    name = f"qemu-{suite}" if version is None else f"qemu-{suite}-{version.replace(':', '_')}"
    return cache_root() / "sources" / name


def _unpack(suite: str, mirror: str, version: str | None, into: Path) -> None:
    if shutil.which("dpkg-source") is None:
        raise BuildError("unpacking a Debian source package needs dpkg-source (package dpkg-dev); "
                         "`make setup` installs it")
    with tempfile.TemporaryDirectory(prefix="gm-src-", dir=into.parent) as tmp:
        work = Path(tmp)
        src = download_qemu_source(suite, mirror, work, version)
        dsc = sorted(src.glob("*.dsc"))
        if len(dsc) != 1:
            raise BuildError(f"qemu/{suite}: expected one .dsc, found {[p.name for p in dsc]}")
        proc = subprocess.run(["dpkg-source", "--no-check", "-x", dsc[0].name, str(work / "tree")],
                              cwd=src, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        if proc.returncode != 0:
            raise BuildError(f"dpkg-source -x {dsc[0].name} failed: {proc.stderr.strip()[-1000:]}")
        shutil.rmtree(into, ignore_errors=True)
        (work / "tree").rename(into)


def download_qemu_source(suite: str, mirror: str, work: Path, version: str | None = None) -> Path:
    """``apt-get source --download-only qemu/<suite>`` (``qemu=<version>`` when given) with a
    private deb-src-only list, into ``work``/src (returned)."""
    state = work / "apt"
    (state / "lists" / "partial").mkdir(parents=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True)
    sources = state / "sources.list"
    sources.write_text(f"deb-src [signed-by={KEYRING}] {mirror} {suite} main\n")
    options = [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "APT::Sandbox::User=root",
    ]
    src = work / "src"
    src.mkdir()
    package = f"qemu/{suite}" if version is None else f"qemu={version}"
    for args in (["update"], ["source", "--download-only", package]):
        argv = ["apt-get", "-q", *options, *args]
        try:
            proc = subprocess.run(argv, cwd=src, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{' '.join(argv)} did not finish in {APT_TIMEOUT_S}s") from exc
        if proc.returncode != 0:
            raise BuildError(
                f"{' '.join(argv)} exited {proc.returncode}; is {mirror} reachable?\n"
                + (proc.stdout + proc.stderr).strip()[-2000:]
            )
    return src
