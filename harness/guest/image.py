"""The golden guest image: found in the user's cache, or built there by guests/golden/build.py.

The cache key is a hash of the recipe inputs (recipe.json, agent.c, init,
build.py), so editing any of them selects a new image; the Debian packages are
resolved within the pinned series when the image is built and recorded in its
manifest, never re-resolved for a cached image.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import paths
from harness.errors import HarnessError

GOLDEN_DIR = paths.REPO_ROOT / "guests" / "golden"
RECIPE_INPUTS = ("recipe.json", "agent.c", "init", "build.py")
BUILD_TIMEOUT_S = 1800

log = logging.getLogger(__name__)


class GuestImageError(HarnessError):
    """The golden image could not be built or its cached copy is unusable."""


@dataclass(frozen=True)
class GoldenImage:
    """A built golden image: what QEMU boots (-kernel, -initrd, -append) and its manifest."""

    kernel: Path
    initrd: Path
    manifest: dict[str, Any]
    image_id: str
    kernel_cmdline: str

    @classmethod
    def load(cls, directory: Path) -> GoldenImage:
        """Read ``directory``'s manifest and check vmlinux and initrd.gz against it."""
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
            image = cls(
                kernel=directory / "vmlinux",
                initrd=directory / "initrd.gz",
                manifest=manifest,
                image_id=str(manifest["image_id"]),
                kernel_cmdline=str(manifest["kernel_cmdline"]),
            )
            for path in (image.kernel, image.initrd):
                want = manifest["files"][path.name]["sha256"]
                if _sha256(path) != want:
                    raise GuestImageError(
                        f"cached golden image {directory} is damaged: {path.name} does not "
                        "match its manifest. Delete that directory; it will be rebuilt."
                    )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GuestImageError(
                f"cached golden image {directory} is unreadable ({type(exc).__name__}: {exc}). "
                "Delete that directory; it will be rebuilt."
            ) from exc
        return image


def recipe_key(golden_dir: Path = GOLDEN_DIR) -> str:
    """16 hex digits naming the recipe inputs' exact contents."""
    digest = hashlib.sha256()
    for name in RECIPE_INPUTS:
        digest.update(name.encode() + b"\0")
        digest.update((golden_dir / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def ensure_golden_image(cache_root: Path | None = None) -> GoldenImage:
    """The golden image for the current recipe, built into the cache first if missing.

    ``cache_root`` defaults to ``~/.cache/goldmig/guests``.  Concurrent
    callers (pytest-xdist workers) serialise on a lock file, so one builds and
    the others reuse.
    """
    root = cache_root if cache_root is not None else paths.cache_root() / "guests"
    try:
        key = recipe_key(GOLDEN_DIR)
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestImageError(f"cannot read the recipe or create the cache {root}: {exc}") from exc
    target = root / key
    with _locked(root / f"{key}.lock"):
        if not (target / "manifest.json").is_file():
            _build(target)
        return GoldenImage.load(target)


def _build(target: Path) -> None:
    argv = [sys.executable, str(GOLDEN_DIR / "build.py"), "--out", str(target)]
    log.info("building golden image into %s", target)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GuestImageError(
            f"golden image build did not finish in {BUILD_TIMEOUT_S}s: {' '.join(argv)}"
        ) from exc
    except OSError as exc:
        raise GuestImageError(f"cannot run {' '.join(argv)}: {exc}") from exc
    log.debug("build.py output:\n%s", proc.stderr)
    if proc.returncode != 0:
        raise GuestImageError(
            f"golden image build failed (exit {proc.returncode}): {_build_error(proc.stderr)}"
        )


def _build_error(stderr: str) -> str:
    """build.py's final ``error:`` paragraph, or the tail of its output."""
    marker = "build.py: error: "
    at = stderr.rfind(marker)
    if at >= 0:
        return stderr[at + len(marker) :].strip()
    return stderr.strip()[-2000:] or "(no output)"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
