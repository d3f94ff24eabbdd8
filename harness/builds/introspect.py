"""Ask a build what it supports, once per build identity (cached on disk)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from harness.builds.model import Build, BuildInfo, MachineInfo
from harness.cache import ensure_file
from harness.errors import BuildError, HarnessError
from harness.hosts.base import Host, Process
from harness.hosts.local import LocalHost
from harness.hosts.workspace import Workspace, own_filesystem, workspace_for
from harness.paths import cache_root
from harness.qemu.monitor import Monitor
from harness.qemu.output import last_words
from harness.runner.rundir import make_rundir

_VERSION = re.compile(r"QEMU emulator version (\S+)")


def introspect(build: Build, host: Host | None = None) -> BuildInfo:
    """Version, machine types with their properties, and CPU core types of ``build``,
    asked on ``host`` (this machine by default: where the build's files are).

    The answer is cached by build identity and checked against its hash on use;
    a damaged entry is asked again (with a warning naming it)."""
    host = host or LocalHost()
    cache = cache_root() / "introspect" / f"{build.name}-{_identity(build, host)}.json"
    ensure_file(cache, lambda part: part.write_text(json.dumps(_dump(_ask(build, host)), indent=1)),
                meta={"build": build.name, "host": host.name, "binary": build.binary})
    return _load(json.loads(cache.read_text()))


def _identity(build: Build, host: Host) -> str:
    if own_filesystem(host):
        proc = host.run_command(["stat", "-L", "-c", "%s|%Y", build.binary], timeout=30.0)
        if proc.returncode != 0:
            raise BuildError(f"build {build.name!r} on host {host.name}: cannot stat "
                             f"{build.binary}: {proc.stderr.strip()}")
        where = f"{host.target.known_hosts_name}|{build.binary}|{proc.stdout.strip()}"
    else:
        binary = build.root / build.binary.lstrip("/")
        try:
            st = binary.stat()
        except OSError as exc:
            raise BuildError(f"build {build.name!r}: cannot stat {binary}: {exc}") from exc
        where = f"{build.root}|{build.binary}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(f"{where}|{build.package}".encode()).hexdigest()[:16]


def _ask(build: Build, host: Host) -> BuildInfo:
    proc = host.run(build, [build.binary, "-version"])
    match = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or not match:
        raise BuildError(
            f"build {build.name!r}: `{build.binary} -version` did not report a QEMU version "
            f"(exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()[:500]}"
        )
    rundir = make_rundir()
    try:
        machines, cores = _ask_qmp(build, host, rundir)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    return BuildInfo(match.group(1), build.package, machines, cores)


# QEMU 5.2 sometimes dies in qom-list-properties ("double free or corruption"),
# a bug of that command, not of migration: a crashed session is restarted and
# the same question asked again, a few times, before introspection gives up.
_ATTEMPTS = 5


def _ask_qmp(build: Build, host: Host, rundir: Path) -> tuple[dict[str, MachineInfo], tuple[str, ...]]:
    with workspace_for(host, rundir, readable=[]) as workspace:
        return _ask_sessions(build, host, rundir, workspace)


def _ask_sessions(
    build: Build, host: Host, rundir: Path, workspace: Workspace
) -> tuple[dict[str, MachineInfo], tuple[str, ...]]:
    machines: dict[str, MachineInfo] = {}
    entries: list[dict[str, object]] | None = None
    cores: tuple[str, ...] | None = None
    for attempt in range(1, _ATTEMPTS + 1):
        sock, output = rundir / f"qmp{attempt}.sock", rundir / f"out{attempt}.log"
        argv = [build.binary, "-M", "none", "-nodefaults", "-display", "none", "-S",
                "-qmp", f"unix:{workspace.path(sock)},server=on,wait=off"]
        proc = host.spawn(build, argv, writable=workspace.writable, readable=[],
                          output=workspace.path(output))
        monitor = Monitor(f"{build.name}-introspect", sock, rundir / f"qmp{attempt}.log")
        try:
            workspace.reach(sock, _alive(proc), timeout=30)
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
            exited = _exits_soon(proc)
            said = workspace.read_text(output)
            if not exited or attempt == _ATTEMPTS:
                raise BuildError(
                    f"build {build.name!r}: introspection over QMP on {host.name} failed: {exc}; "
                    f"QEMU said: {last_words(said)}\n{said[-1000:]}"
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
