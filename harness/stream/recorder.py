"""Make real migration streams (and -dump-vmstate dumps) with a QEMU build, cached.

A stream is made by starting the build's ``qemu-system-ppc64`` with a
recipe (machine type and properties, CPU, memory, optionally a guest to boot)
and migrating it to ``exec:cat > FILE``. Streams are cached under
``~/.cache/goldmig/streams/`` keyed by the build's QEMU version and package
and the recipe (including the guest image's identity), so a second run
reuses them; each carries its sha256 (:mod:`harness.cache`), checked on use,
and is recorded again when it no longer matches. QEMU runs through the host
driver (bubblewrap for a build with its own root) and is spoken to over QMP
with :class:`~harness.qemu.monitor.Monitor`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.builds.introspect import introspect
from harness.builds.model import Build, MachineInfo
from harness.cache import ensure_file
from harness.errors import HarnessError
from harness.hosts.local import LocalHost
from harness.paths import cache_root
from harness.qemu.machine import TCG_CAP_SETTINGS
from harness.qemu.monitor import Monitor


class RecordError(HarnessError):
    """QEMU did not produce the stream (or dump) asked for."""


@dataclass(frozen=True)
class GuestBoot:
    """A guest to boot before migrating: kernel, initrd, command line, and how to tell it is up."""

    kernel: Path
    initrd: Path
    append: str
    identity: str  # names the image in the cache key (e.g. the golden image id)
    ready: str = "##GM"  # console text that shows the guest reached userspace
    settle_s: float = 2.0  # then let it run this long before migrating
    boot_timeout_s: float = 120.0


@dataclass(frozen=True)
class StreamRecipe:
    """How the source QEMU is started; a stopped machine (``-S``) when ``guest`` is None."""

    machine: str
    properties: tuple[tuple[str, str], ...] = ()
    cpu: str = "POWER9"
    memory_mb: int = 256
    guest: GuestBoot | None = None
    devices: tuple[str, ...] = ()  # extra -device options
    files: tuple[Path, ...] = ()  # files the devices read (bound read-only into a build's root)
    tag: str = ""  # names what the devices/files stand for in the cache key and file name
    smp: int = 1
    maxcpus: int = 1

    def machine_arg(self) -> str:
        return ",".join([self.machine, *(f"{k}={v}" for k, v in self.properties)])

    def label(self) -> str:
        ic = dict(self.properties).get("ic-mode", "default")
        state = "running" if self.guest else "stopped"
        tag = f"-{self.tag}" if self.tag else ""
        return f"{self.machine}-{ic}-{self.memory_mb}m-{state}{tag}"


@dataclass(frozen=True)
class RecordedStream:
    path: Path
    build: str
    qemu_version: str
    recipe: StreamRecipe


def tcg_properties(machine: MachineInfo, **extra: str) -> tuple[tuple[str, str], ...]:
    """The TCG cap settings this machine type has, then ``extra`` (e.g. ``ic_mode="xive"``)."""
    props = [(cap, value) for cap, value in TCG_CAP_SETTINGS if cap in machine.properties]
    props += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return tuple(props)


def record_stream(
    build: Build,
    recipe: StreamRecipe,
    *,
    cache_dir: Path | None = None,
    host: LocalHost | None = None,
    timeout_s: float = 300.0,
) -> RecordedStream:
    """The stream of ``recipe`` on ``build``, from the cache (checked against its hash) or made now."""
    host = host or LocalHost()
    info = introspect(build, host)
    identity = {"qemu": info.version, "package": build.package, "binary": build.binary,
                "recipe": _recipe_key(recipe)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cache = cache_dir or cache_root() / "streams"
    final = cache / f"{build.name}-{recipe.label()}-{key}.bin"
    ensure_file(final, lambda part: _record(build, recipe, host, part, timeout_s),
                meta={**identity, "made": time.time()})
    return RecordedStream(final, build.name, info.version, recipe)


def dump_vmstate(
    build: Build, machine: str, *, cache_dir: Path | None = None, host: LocalHost | None = None
) -> dict[str, Any]:
    """``qemu-system-ppc64 -M <machine> -dump-vmstate FILE``, parsed (cached, checked against its hash)."""
    host = host or LocalHost()
    info = introspect(build, host)
    cache = cache_dir or cache_root() / "streams"
    final = cache / f"vmstate-{build.name}-{info.version}-{machine}.json"
    ensure_file(final, lambda part: _dump(build, machine, host, part),
                meta={"qemu": info.version, "package": build.package, "binary": build.binary,
                      "machine": machine})
    data = json.loads(final.read_text())
    assert isinstance(data, dict)
    return data


def _dump(build: Build, machine: str, host: LocalHost, part: Path) -> None:
    with _rundir() as rundir:
        out = rundir / "vmstate.json"
        argv = [build.binary, "-M", machine, "-nodefaults", "-display", "none",
                "-dump-vmstate", str(out)]
        proc = host.spawn(build, argv, writable=[rundir], readable=[], output=rundir / "qemu.log")
        code = proc.wait(timeout=120)
        if code != 0 or not out.exists():
            raise RecordError(
                f"{build.name}: -dump-vmstate for {machine} failed (exit {code}): "
                + (rundir / "qemu.log").read_text(errors="replace")[-1500:]
            )
        shutil.copyfile(out, part)


def _recipe_key(recipe: StreamRecipe) -> dict[str, Any]:
    data = asdict(recipe)
    data["files"] = [str(p) for p in recipe.files]
    if recipe.guest is not None:
        data["guest"] = {"identity": recipe.guest.identity, "append": recipe.guest.append,
                         "settle_s": recipe.guest.settle_s}
    return data


def _record(build: Build, recipe: StreamRecipe, host: LocalHost, part: Path, timeout_s: float) -> None:
    with _rundir() as rundir:
        sock = rundir / "qmp.sock"
        serial = rundir / "serial.log"
        argv = [build.binary]
        if build.firmware_dir:
            argv += ["-L", build.firmware_dir]
        argv += ["-accel", "tcg", "-M", recipe.machine_arg(), "-cpu", recipe.cpu,
                 "-m", str(recipe.memory_mb), "-smp", f"{recipe.smp},maxcpus={recipe.maxcpus}",
                 "-nodefaults", "-display", "none",
                 "-qmp", f"unix:{sock},server=on,wait=off"]
        readable: list[Path] = sorted({f.parent for f in recipe.files})
        for dev in recipe.devices:
            argv += ["-device", dev]
        if recipe.guest is None:
            argv.append("-S")
        else:
            g = recipe.guest
            argv += ["-kernel", str(g.kernel), "-initrd", str(g.initrd), "-append", g.append,
                     "-serial", f"file:{serial}"]
            readable = sorted({*readable, g.kernel.parent, g.initrd.parent})
        proc = host.spawn(build, argv, writable=[rundir], readable=readable,
                          output=rundir / "qemu.log")
        monitor = Monitor(f"{build.name}-record", sock, rundir / "qmp.log")

        def fail(why: str) -> RecordError:
            log = (rundir / "qemu.log").read_text(errors="replace").strip()[-1500:]
            return RecordError(f"{build.name} {recipe.machine_arg()}: {why}\n"
                               f"command: {' '.join(argv)}\nQEMU said: {log or '(nothing)'}")

        try:
            monitor.connect(lambda: proc.poll() is None, timeout=60)
            if recipe.guest is not None:
                _wait_for_text(serial, recipe.guest.ready, recipe.guest.boot_timeout_s,
                               lambda: proc.poll() is None, fail)
                time.sleep(recipe.guest.settle_s)
            out = rundir / "stream.bin"
            monitor.cmd("migrate", uri=f"exec:cat > {out}.part && mv {out}.part {out}")
            deadline = time.monotonic() + timeout_s
            status = ""
            while time.monotonic() < deadline:
                status = monitor.cmd("query-migrate").get("status", "")
                if status in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            if status != "completed":
                raise fail(f"migration ended as {status or 'still running'!r}")
            while not out.exists():
                if time.monotonic() > deadline:
                    raise fail("migration completed but the stream file never appeared")
                time.sleep(0.02)
            shutil.move(str(out), part)
        except HarnessError as exc:
            if isinstance(exc, RecordError):
                raise
            raise fail(str(exc)) from exc
        finally:
            monitor.close()
            host.kill(proc)


def _wait_for_text(path: Path, text: str, timeout_s: float, alive: Any, fail: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if not alive():
            raise fail(f"QEMU exited before the guest printed {text!r}")
        time.sleep(0.2)
    raise fail(f"the guest did not print {text!r} within {timeout_s}s")


@contextmanager
def _rundir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gm-rec-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
