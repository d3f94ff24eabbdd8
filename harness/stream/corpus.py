"""The reference streams the stream tests and the benchmark share.

Reference builds are Debian's QEMU 5.2 (bullseye), 7.2 (bookworm, the host's
package) and 10.0 (trixie), each with its newest pseries machine type by
default. Streams are recorded with :func:`~harness.stream.recorder.record_stream`
(cached): a stopped machine (``-S``), a running golden guest, or a stopped
machine whose RAM a generic loader filled with pseudo-random data (a large
stream of real pages without a guest to write them).
"""

from __future__ import annotations

import random
from pathlib import Path

from harness.builds.debian_suite import DebianSuiteBuild
from harness.builds.host_package import HostPackageBuild
from harness.builds.introspect import introspect
from harness.builds.model import Build
from harness.builds.spec import BuildSpec
from harness.paths import cache_root
from harness.stream.recorder import (
    GuestBoot,
    RecordedStream,
    RecordError,
    StreamRecipe,
    record_stream,
    tcg_properties,
)

REFERENCE_BUILDS: dict[str, BuildSpec] = {
    "5.2": DebianSuiteBuild("qemu-5.2", "bullseye"),
    "7.2": HostPackageBuild("qemu-7.2"),
    "10.0": DebianSuiteBuild("qemu-10.0", "trixie"),
}
NEWEST_PSERIES = {"5.2": "pseries-5.2", "7.2": "pseries-7.2", "10.0": "pseries-10.0"}
_FILL_ADDRESS = 0x10000000  # above the kernel/firmware area


def reference_build(label: str) -> Build:
    """The reference build ``label`` ("5.2", "7.2", "10.0"), provisioned (debootstrap on first use)."""
    return REFERENCE_BUILDS[label].provision()


def golden_boot() -> GuestBoot:
    """The golden guest image, built into the cache on first use."""
    from harness.guest.image import ensure_golden_image

    image = ensure_golden_image()
    return GuestBoot(image.kernel, image.initrd, image.kernel_cmdline, image.image_id)


def recipe(label: str, ic_mode: str | None = None, *, machine: str | None = None,
           memory_mb: int = 256, guest: GuestBoot | None = None) -> tuple[Build, StreamRecipe]:
    """A build and a recipe with the TCG caps its machine type needs (and VOF to boot fast)."""
    build = reference_build(label)
    machine = machine or NEWEST_PSERIES[label]
    info = introspect(build).machine(machine)
    if info is None:
        raise RecordError(f"{build.name} has no machine type {machine}")
    extra = {}
    if ic_mode is not None:
        extra["ic_mode"] = ic_mode
    if guest is not None and "x-vof" in info.properties:
        extra["x_vof"] = "on"
    return build, StreamRecipe(machine, tcg_properties(info, **extra), memory_mb=memory_mb, guest=guest)


def stopped_stream(label: str, ic_mode: str | None = None, *, machine: str | None = None,
                   memory_mb: int = 256) -> RecordedStream:
    build, r = recipe(label, ic_mode, machine=machine, memory_mb=memory_mb)
    return record_stream(build, r)


def running_stream(label: str, ic_mode: str | None = "dual", *, machine: str | None = None,
                   memory_mb: int = 512, guest: GuestBoot | None = None) -> RecordedStream:
    build, r = recipe(label, ic_mode, machine=machine, memory_mb=memory_mb,
                      guest=guest or golden_boot())
    return record_stream(build, r)


def filled_stream(label: str = "7.2", *, memory_mb: int = 2048, fill_mb: int = 1536) -> RecordedStream:
    """A stopped machine with ``fill_mb`` of pseudo-random data in RAM: ~fill_mb of page records."""
    build, r = recipe(label, "xics", memory_mb=memory_mb)
    blob = _fill_blob(fill_mb)
    r = StreamRecipe(r.machine, r.properties, r.cpu, r.memory_mb, None,
                     devices=(f"loader,file={blob},addr=0x{_FILL_ADDRESS:x}",), files=(blob,),
                     tag=f"fill{fill_mb}m")
    return record_stream(build, r)


def _fill_blob(fill_mb: int) -> Path:
    """Deterministic pseudo-random bytes (so the pages are neither zero nor compressible)."""
    path = cache_root() / "streams" / "blobs" / f"fill-{fill_mb}m-v1.bin"
    if path.exists() and path.stat().st_size == fill_mb << 20:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(fill_mb)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        for _ in range(fill_mb):
            out.write(rng.randbytes(1 << 20))
    tmp.replace(path)
    return path
