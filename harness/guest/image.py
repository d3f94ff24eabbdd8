"""The golden guest image: found in the user's cache, or built there by guests/golden/build.py.

The image comes with one of two kernels (:data:`KERNELS`): ``goldmig``, our own
(guests/golden/kernel/, built once by its build_kernel.py and cached), the
default; or ``debian``, Debian's generic linux-image package. The initramfs is
the same. The two images are cached side by side under
``<kernel>-<hash>``: a hash of the kernel choice and the recipe inputs
(recipe.json, agent.c, init, build.py and, for ``goldmig``, every file of
guests/golden/kernel/), so editing any of them selects a new image; the Debian
packages are resolved within the pinned series when the image is built and
recorded in its manifest, never re-resolved for a cached image. After a build
the harness records the sha256 of the kernel, initrd and manifest beside the
image (:mod:`harness.cache`); an image that no longer matches is built again.
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
KERNEL_DIR = "kernel"  # under GOLDEN_DIR: our kernel's inputs, all of them key a goldmig image
KERNELS = ("goldmig", "debian")
DEFAULT_KERNEL = "goldmig"
IMAGE_FILES = ("vmlinux", "initrd.gz", "manifest.json")
BUILD_TIMEOUT_S = 1800

log = logging.getLogger(__name__)


class GuestImageError(HarnessError):
    """The golden image could not be built or its cached copy is unusable."""


@dataclass(frozen=True)
class KernelIdentity:
    """The golden image's kernel: its kind, id, version string (``uname -r``), sha256 of its
    vmlinux, and where it comes from."""

    kind: str
    kernel_id: str
    version: str
    sha256: str
    origin: str


@dataclass(frozen=True)
class GoldenImage:
    """A built golden image: what QEMU boots (-kernel, -initrd, -append) and its manifest."""

    kernel: Path
    initrd: Path
    manifest: dict[str, Any]
    image_id: str
    kernel_cmdline: str

    @property
    def kernel_kind(self) -> str:
        """``goldmig`` or ``debian``: a debian image's manifest has no ``kernel`` entry."""
        entry = self.manifest.get("kernel")
        return str(entry["kind"]) if isinstance(entry, dict) else "debian"

    def kernel_identity(self) -> KernelIdentity:
        """Which kernel the image boots, from its manifest."""
        m = self.manifest
        sha256 = str(m["files"]["vmlinux"]["sha256"])
        if self.kernel_kind == "goldmig":
            k = m["kernel"]
            toolchain = k["build"]["toolchain"]
            origin = (f"built from {k['source']['package']} {k['source']['version']}, config "
                      f"{k['config']['base']} + {k['config']['fragment']}, {toolchain['compiler']}")
            return KernelIdentity("goldmig", str(k["kernel_id"]), str(m["kernel_version"]), sha256,
                                  origin)
        package = next(p for p in m["packages"] if p["role"] == "kernel")
        return KernelIdentity("debian", f"{package['name']} {package['version']}",
                              str(m["kernel_version"]), sha256, f"Debian package {package['deb']}")

    @classmethod
    def load(cls, directory: Path) -> GoldenImage:
        """Read ``directory``'s manifest (its files are checked by :func:`ensure_golden_image`)."""
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
            image = cls(
                kernel=directory / "vmlinux",
                initrd=directory / "initrd.gz",
                manifest=manifest,
                image_id=str(manifest["image_id"]),
                kernel_cmdline=str(manifest["kernel_cmdline"]),
            )
            image.kernel_identity()  # a manifest that cannot say its kernel is unreadable too
            return image
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
            raise GuestImageError(
                f"golden image {directory} has an unreadable manifest ({type(exc).__name__}: "
                f"{exc}): guests/golden/build.py wrote something the harness cannot read. "
                f"Fix build.py, then remove the image with `rm -rf {shlex.quote(str(directory))}`."
            ) from exc


def recipe_key(golden_dir: Path = GOLDEN_DIR, kernel: str = DEFAULT_KERNEL) -> str:
    """``<kernel>-<16 hex digits>``: the kernel choice and the exact contents of the recipe
    inputs (with ``goldmig``, every file under guests/golden/kernel/ too)."""
    names = list(RECIPE_INPUTS)
    if kernel == "goldmig":
        names += sorted(
            str(path.relative_to(golden_dir))
            for path in (golden_dir / KERNEL_DIR).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
        )
    digest = hashlib.sha256(f"kernel={kernel}\0".encode())
    for name in names:
        digest.update(name.encode() + b"\0")
        digest.update((golden_dir / name).read_bytes())
        digest.update(b"\0")
    return f"{kernel}-{digest.hexdigest()[:16]}"


def ensure_golden_image(cache_root: Path | None = None, kernel: str = DEFAULT_KERNEL) -> GoldenImage:
    """The golden image with ``kernel`` (``goldmig``, our own, or ``debian``, Debian's
    generic kernel package) for the current recipe, built into the cache first if missing,
    and built again (with a warning naming it) if its files no longer match their recorded
    hashes.

    ``cache_root`` defaults to ``~/.cache/goldmig/guests``.  Concurrent
    callers (pytest-xdist workers) serialise on a lock, so one builds and the
    others reuse.
    """
    if kernel not in KERNELS:
        raise GuestImageError(f"no golden image with kernel {kernel!r}: the kernels are "
                              f"{', '.join(KERNELS)}")
    root = cache_root if cache_root is not None else paths.cache_root() / "guests"
    try:
        key = recipe_key(GOLDEN_DIR, kernel)
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestImageError(f"cannot read the recipe or create the cache {root}: {exc}") from exc
    directory = cache.ensure_dir(root / key, IMAGE_FILES, lambda target: _build(target, kernel))
    image = GoldenImage.load(directory)
    if image.kernel_kind != kernel:
        raise GuestImageError(
            f"golden image {directory} boots a {image.kernel_kind} kernel, not the {kernel} kernel "
            f"its cache key names: remove it with `rm -rf {shlex.quote(str(directory))}`."
        )
    return image


def _build(target: Path, kernel: str) -> None:
    argv = [sys.executable, str(GOLDEN_DIR / "build.py"), "--out", str(target), "--kernel", kernel]
    log.info("building golden image (%s kernel) into %s", kernel, target)
    print(f"goldmig: building the golden image ({kernel} kernel) into {target}"
          + ("; a kernel not built yet is compiled first (minutes, once)" if kernel == "goldmig" else ""),
          file=sys.stderr, flush=True)
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
