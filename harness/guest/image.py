"""The golden guest image: found in the user's cache, or built there by guests/golden/build.py.

The cache key is a hash of the recipe inputs (recipe.json, agent.c, init,
build.py), so editing any of them selects a new image; the Debian packages are
resolved within the pinned series when the image is built and recorded in its
manifest, never re-resolved for a cached image. After a build the harness
records the sha256 of the kernel, initrd and manifest beside the image
(:mod:`harness.cache`); an image that no longer matches is built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cache, paths
from harness.errors import HarnessError

GOLDEN_DIR = paths.REPO_ROOT / "guests" / "golden"
RECIPE_INPUTS = ("recipe.json", "agent.c", "init", "build.py")
IMAGE_FILES = ("vmlinux", "initrd.gz", "manifest.json")
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
        """Read ``directory``'s manifest (its files are checked by :func:`ensure_golden_image`)."""
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
            return cls(
                kernel=directory / "vmlinux",
                initrd=directory / "initrd.gz",
                manifest=manifest,
                image_id=str(manifest["image_id"]),
                kernel_cmdline=str(manifest["kernel_cmdline"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GuestImageError(
                f"golden image {directory} has an unreadable manifest ({type(exc).__name__}: "
                f"{exc}): guests/golden/build.py wrote something the harness cannot read. "
                f"Fix build.py, then remove the image with `rm -rf {shlex.quote(str(directory))}`."
            ) from exc


def recipe_key(golden_dir: Path = GOLDEN_DIR) -> str:
    """16 hex digits naming the recipe inputs' exact contents."""
    digest = hashlib.sha256()
    for name in RECIPE_INPUTS:
        digest.update(name.encode() + b"\0")
        digest.update((golden_dir / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def ensure_golden_image(cache_root: Path | None = None) -> GoldenImage:
    """The golden image for the current recipe, built into the cache first if missing, and
    built again (with a warning naming it) if its files no longer match their recorded hashes.

    ``cache_root`` defaults to ``~/.cache/goldmig/guests``.  Concurrent
    callers (pytest-xdist workers) serialise on a lock, so one builds and the
    others reuse.
    """
    root = cache_root if cache_root is not None else paths.cache_root() / "guests"
    try:
        key = recipe_key(GOLDEN_DIR)
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestImageError(f"cannot read the recipe or create the cache {root}: {exc}") from exc
    return GoldenImage.load(cache.ensure_dir(root / key, IMAGE_FILES, _build))


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
