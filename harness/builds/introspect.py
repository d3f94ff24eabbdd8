"""Ask a build what it supports, once per build identity (cached on disk)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from harness.builds.model import Build, BuildInfo, MachineInfo
from harness.errors import BuildError, HarnessError
from harness.hosts.base import Process
from harness.hosts.local import LocalHost
from harness.paths import cache_root
from harness.qemu.monitor import Monitor

_VERSION = re.compile(r"QEMU emulator version (\S+)")


def introspect(build: Build, host: LocalHost | None = None) -> BuildInfo:
    """Version, machine types with their properties, and CPU core types of ``build``."""
    host = host or LocalHost()
    cache = cache_root() / "introspect" / f"{build.name}-{_identity(build)}.json"
    if cache.exists():
        return _load(json.loads(cache.read_text()))
    info = _ask(build, host)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(_dump(info), indent=1))
    tmp.replace(cache)
    return info


def _identity(build: Build) -> str:
    binary = build.root / build.binary.lstrip("/")
    try:
        st = binary.stat()
    except OSError as exc:
        raise BuildError(f"build {build.name!r}: cannot stat {binary}: {exc}") from exc
    key = f"{build.root}|{build.binary}|{st.st_size}|{st.st_mtime_ns}|{build.package}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _ask(build: Build, host: LocalHost) -> BuildInfo:
    proc = host.run(build, [build.binary, "-version"])
    match = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or not match:
        raise BuildError(
            f"build {build.name!r}: `{build.binary} -version` did not report a QEMU version "
            f"(exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()[:500]}"
        )
    rundir = Path(tempfile.mkdtemp(prefix="gm-intro-"))
    try:
        machines, cores = _ask_qmp(build, host, rundir)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    return BuildInfo(match.group(1), build.package, machines, cores)


# QEMU 5.2 sometimes dies in qom-list-properties ("double free or corruption"),
# a bug of that command, not of migration: a crashed session is restarted and
# the same question asked again, a few times, before introspection gives up.
_ATTEMPTS = 5


def _ask_qmp(build: Build, host: LocalHost, rundir: Path) -> tuple[dict[str, MachineInfo], tuple[str, ...]]:
    machines: dict[str, MachineInfo] = {}
    entries: list[dict[str, object]] | None = None
    cores: tuple[str, ...] | None = None
    for attempt in range(1, _ATTEMPTS + 1):
        session = rundir / str(attempt)
        session.mkdir()
        sock = session / "qmp.sock"
        argv = [build.binary, "-M", "none", "-nodefaults", "-display", "none", "-S",
                "-qmp", f"unix:{sock},server=on,wait=off"]
        proc = host.spawn(build, argv, writable=[session], readable=[], output=session / "out.log")
        monitor = Monitor(f"{build.name}-introspect", sock, session / "qmp.log")
        try:
            monitor.connect(_alive(proc), timeout=30)
            entries = entries or monitor.cmd("query-machines")
            assert entries is not None
            for entry in entries:
                name = str(entry["name"])
                if name in machines:
                    continue
                props: frozenset[str] = frozenset()
                if name.startswith("pseries"):
                    listed = monitor.cmd("qom-list-properties", typename=f"{name}-machine")
                    props = frozenset(p["name"] for p in listed)
                alias = entry.get("alias")
                machines[name] = MachineInfo(
                    name, str(alias) if alias else None, bool(entry.get("deprecated", False)), props
                )
            types = monitor.cmd("qom-list-types", implements="spapr-cpu-core", abstract=False)
            cores = tuple(sorted(t["name"] for t in types))
            return machines, cores
        except HarnessError as exc:
            output = (session / "out.log").read_text(errors="replace")[-1000:]
            if not _exits_soon(proc) or attempt == _ATTEMPTS:
                raise BuildError(
                    f"build {build.name!r}: introspection over QMP failed: {exc}\n{output}"
                ) from exc
        finally:
            monitor.close()
            host.kill(proc)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _alive(proc: Process) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def _exits_soon(proc: Process) -> bool:
    """Did QEMU die (an abort takes a moment to finish), rather than drop the connection?"""
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return False
    return True


def _dump(info: BuildInfo) -> dict[str, object]:
    data = asdict(info)
    for machine in data["machines"].values():
        machine["properties"] = sorted(machine["properties"])
    return data


def _load(data: dict[str, object]) -> BuildInfo:
    machines_raw = data["machines"]
    assert isinstance(machines_raw, dict)
    machines = {
        name: MachineInfo(m["name"], m["alias"], m["deprecated"], frozenset(m["properties"]))
        for name, m in machines_raw.items()
    }
    cores = data["cpu_cores"]
    assert isinstance(cores, list)
    package = data["package"]
    return BuildInfo(str(data["version"]), str(package) if package else None, machines, tuple(cores))
