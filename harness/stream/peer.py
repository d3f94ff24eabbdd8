"""QEMU's own stream tools, the peers goldmig is measured against, from Debian's source package.

``scripts/analyze-migration.py`` and ``scripts/vmstate-static-checker.py``
are taken from the ``qemu`` source package of a Debian suite (trixie: QEMU
10.0) with apt's ordinary client, using a private deb-src-only source list
and state directory, so the host's apt configuration is left alone. Debian
patches that touch the scripts are applied. The result is cached under
``~/.cache/goldmig/peer/qemu-<suite>/`` with the package version, and fetched
again when the scripts no longer match their recorded sha256.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.builds.debian_source import DEFAULT_MIRROR, download_qemu_source
from harness.cache import ensure_dir
from harness.errors import BuildError, HarnessError
from harness.paths import cache_root

PEER_SUITE = "trixie"
SCRIPTS = {
    "analyze": "scripts/analyze-migration.py",
    "static_checker": "scripts/vmstate-static-checker.py",
}


class PeerError(HarnessError):
    """QEMU's scripts could not be fetched or did not run."""


@dataclass(frozen=True)
class PeerScripts:
    """The fetched scripts and the Debian source version they came from."""

    suite: str
    version: str
    analyze: Path
    static_checker: Path


def ensure_peer_scripts(suite: str = PEER_SUITE, mirror: str = DEFAULT_MIRROR) -> PeerScripts:
    """The scripts of ``suite``'s qemu source package, fetched on first use."""
    names = [Path(rel).name for rel in SCRIPTS.values()]
    root = ensure_dir(cache_root() / "peer" / f"qemu-{suite}", [*names, "peer.json"],
                      lambda into: _fetch(suite, mirror, into))
    version = json.loads((root / "peer.json").read_text())["version"]
    return PeerScripts(suite, version, root / Path(SCRIPTS["analyze"]).name,
                       root / Path(SCRIPTS["static_checker"]).name)


def run_analyze(scripts: PeerScripts, stream: Path, dump: str = "state", timeout: float = 600) -> Any:
    """``analyze-migration.py -f STREAM -d DUMP`` and its JSON output."""
    argv = [sys.executable, str(scripts.analyze), "-f", str(stream), "-d", dump]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PeerError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def run_static_checker(scripts: PeerScripts, src: Path, dst: Path) -> tuple[int, str]:
    """``vmstate-static-checker.py -s SRC -d DST``: its exit code (error count) and report."""
    argv = [sys.executable, str(scripts.static_checker), "-s", str(src), "-d", str(dst)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode < 0 or proc.stderr.strip():
        raise PeerError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.returncode, proc.stdout


def _fetch(suite: str, mirror: str, root: Path) -> None:
    for tool in ("apt-get", "patch"):
        if shutil.which(tool) is None:
            raise PeerError(f"fetching QEMU's scripts needs {tool}, which is not installed")
    with tempfile.TemporaryDirectory(prefix="gm-peer-", dir=root.parent) as tmp:
        work = Path(tmp)
        try:
            download_qemu_source(suite, mirror, work)
        except BuildError as exc:
            raise PeerError(str(exc)) from exc
        dsc = _one(work / "src", "*.dsc")
        version = dsc.stem.split("_", 1)[1]
        out = work / "out"
        tree = work / "tree"
        _extract(_one(work / "src", "*.orig.tar.*"), tree, set(SCRIPTS.values()))
        _apply_debian_patches(_debian_tarball(work / "src"), tree, set(SCRIPTS.values()))
        out.mkdir()
        for rel in SCRIPTS.values():
            shutil.copy2(tree / rel, out / Path(rel).name)
        (out / "peer.json").write_text(json.dumps({"suite": suite, "version": version}) + "\n")
        shutil.rmtree(root, ignore_errors=True)
        out.rename(root)


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise PeerError(f"expected one {pattern} in {directory}, found {[p.name for p in found]}")
    return found[0]


def _debian_tarball(directory: Path) -> Path | None:
    found = sorted(directory.glob("*.debian.tar.*"))
    return found[0] if found else None


def _extract(tarball: Path, tree: Path, wanted: set[str]) -> None:
    """Only the ``wanted`` files (paths below the tarball's top directory)."""
    tree.mkdir(parents=True, exist_ok=True)
    found = set()
    with tarfile.open(tarball) as tar:
        for member in tar:
            rel = member.name.split("/", 1)[-1]
            if rel in wanted and member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                target = tree / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
                found.add(rel)
    if found != wanted:
        raise PeerError(f"{tarball.name} lacks {sorted(wanted - found)}")


def _apply_debian_patches(tarball: Path | None, tree: Path, wanted: set[str]) -> None:
    """Apply, in series order, the Debian patches that touch the scripts."""
    if tarball is None:
        return
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        series_member = members.get("debian/patches/series")
        if series_member is None:
            return
        series = _read(tar, series_member).decode().splitlines()
        for line in series:
            name = line.split("#", 1)[0].strip().split(" ")[0]
            member = members.get(f"debian/patches/{name}") if name else None
            if member is None:
                continue
            patch = _only_files(_read(tar, member), wanted)
            if not patch:
                continue
            proc = subprocess.run(
                ["patch", "-p1", "--forward", "--batch", "-d", str(tree)],
                input=patch, capture_output=True, timeout=60,
            )
            if proc.returncode != 0:
                raise PeerError(f"Debian patch {name} does not apply: {proc.stdout.decode()[-1000:]}")


def _only_files(patch: bytes, wanted: set[str]) -> bytes:
    """The parts of a unified diff that change ``wanted`` paths (``+++ b/<path>``)."""
    kept: list[bytes] = []
    keep = False
    lines = patch.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(b"--- ") and i + 1 < len(lines) and lines[i + 1].startswith(b"+++ "):
            target = lines[i + 1][4:].split(b"\t")[0].strip().decode(errors="replace")
            keep = target.split("/", 1)[-1] in wanted
        elif line.startswith(b"diff ") or line.startswith(b"Index: "):
            keep = False
            continue
        if keep:
            kept.append(line)
    return b"".join(kept)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()
