"""Read matrix.yaml and validate every key; errors name the file, the key and the fix."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from harness.builds.kinds import BUILD_KINDS
from harness.builds.spec import BuildSpec
from harness.drivers import DRIVERS
from harness.errors import ConfigError
from harness.guest.image import KERNELS as GUEST_KERNELS
from harness.matrix.model import (
    Group,
    GuestSettings,
    KnownFailure,
    LabHost,
    Matrix,
    ScenarioRef,
    Timeouts,
)
from harness.matrix.reader import Reader
from harness.scenarios import SCENARIOS
from harness.sites import SITES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_MACHINE = re.compile(r"^pseries(-\d+\.\d+)?$")
FIRMWARES = ("auto", "vof", "slof")
ACCELS = ("kvm", "tcg")
_LAB_KEYS = ("address", "port", "user", "key_file", "known_hosts", "accel", "workdir", "netns")
# Which cells keep their recorded migration stream; "none" does not record at all.
KEEP_STREAMS = ("failed", "all", "none")


def load_matrix(path: Path) -> Matrix:
    """Parse and validate ``path``; raises :class:`ConfigError` on any problem."""
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found; pass --matrix with the right path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"is not valid YAML: {exc}") from None
    top = Reader(source, data, "")
    top.only("builds", "guest", "checks", "timeouts", "groups", "selections",
             "default_selection", "known_failures", "reports", "hosts", "kvm_hosts", "lab")
    builds = _builds(top.sub("builds"))
    hosts, kvm_hosts, lab = _hosts(top, builds)
    groups = _groups(top, builds, lab[0].accel if hosts == "lab" and lab else "tcg")
    selections = _selections(top.sub("selections"))
    default = top.get("default_selection", str, required=True)
    if default not in selections:
        raise top.error("default_selection", f"{default!r} is not one of selections: "
                        f"{', '.join(selections)}")
    checks = top.sub("checks")
    checks.only("tb_slack_ms")
    slack = checks.get("tb_slack_ms", int, 500)
    reports = top.sub("reports")
    reports.only("keep_streams")
    keep = reports.get("keep_streams", str, "failed")
    if keep not in KEEP_STREAMS:
        raise reports.error("keep_streams", f"{keep!r} is not one of {', '.join(KEEP_STREAMS)}")
    matrix = Matrix(source, builds, _guest(top.sub("guest")), slack, _timeouts(top.sub("timeouts")),
                    groups, selections, default, _known(top, source), keep, hosts, lab, kvm_hosts)
    _check_accels(top, matrix)
    return matrix


def _hosts(top: Reader, builds: dict[str, BuildSpec]) -> tuple[str, str, tuple[LabHost, LabHost] | None]:
    """``hosts`` (where tcg cells run, and every cell on lab hosts), ``kvm_hosts`` and the lab."""
    hosts = top.get("hosts", str, "local")
    if hosts not in SITES or hosts == "nested":  # one per module of harness/sites/
        raise top.error("hosts", f"{hosts!r} is not one of {', '.join(k for k in SITES if k != 'nested')} "
                        "(nested hosts run the `accel: kvm` cells: see kvm_hosts)")
    kvm_hosts = top.get("kvm_hosts", str, "nested")
    if kvm_hosts not in ("nested", "lab"):
        raise top.error("kvm_hosts", f"{kvm_hosts!r} is not nested or lab")
    lab = _lab(top, builds) if "lab" in (hosts, kvm_hosts) else None
    if lab is None and "lab" in top.data:
        raise top.error("lab", f"is only used with `hosts: lab` or `kvm_hosts: lab` (hosts is {hosts!r})")
    return hosts, kvm_hosts, lab


def _check_accels(top: Reader, matrix: Matrix) -> None:
    """Every cell's hosts run its accelerator, and nested hosts can run every build of a kvm cell."""
    cells = matrix.cells()
    for cell in cells:
        if matrix.hosts_of(cell) == "lab" and matrix.lab is not None and matrix.lab[0].accel != cell.accel:
            raise top.error("lab.source.accel", f"the lab hosts run {matrix.lab[0].accel}, but cell "
                            f"{cell.id} (accel {cell.accel}) would run on them; set the group's accel")
    nested = {b for c in cells if matrix.hosts_of(c) == "nested" for b in (c.src, c.dst)}
    for name in sorted(nested):
        if why := matrix.builds[name].nested_refusal():
            raise top.error(f"builds.{name}", f"is in a group with `accel: kvm`, whose cells run on "
                            f"nested hosts, but {why}")


def _lab(top: Reader, builds: dict[str, BuildSpec]) -> tuple[LabHost, LabHost]:
    """The lab's source and destination hosts; builds must be ones a lab host can have."""
    if "lab" not in top.data:
        raise top.error("lab", "is required with `hosts: lab`: give lab.source and "
                        "lab.destination, each with at least an address")
    r = top.sub("lab")
    r.only("source", "destination")
    hosts = []
    for role in ("source", "destination"):
        if role not in r.data:
            raise r.error(role, "is required: a mapping with at least an address")
        h = r.sub(role)
        h.only(*_LAB_KEYS)
        accel = h.get("accel", str, "kvm")
        if accel not in ACCELS:
            raise h.error("accel", f"{accel!r} is not one of {', '.join(ACCELS)}")
        port = h.get("port", int, 22)
        if not 0 < port < 65536:
            raise h.error("port", f"{port} is not a TCP port")
        address = h.get("address", str, required=True)
        hosts.append(LabHost(
            name=f"{role}:{address}", address=address, port=port, user=h.get("user", str, "root"),
            key_file=h.get("key_file", str, None),
            known_hosts=h.get("known_hosts", str, "~/.ssh/known_hosts"),
            accel=accel, workdir=h.get("workdir", str, "/var/tmp/goldmig"), netns=h.get("netns", str, None),
        ))
    if hosts[0].accel != hosts[1].accel:
        raise r.error("destination.accel", f"is {hosts[1].accel} but the source's is "
                      f"{hosts[0].accel}; both sides of a migration use the same accelerator")
    for name, spec in builds.items():
        if why := spec.lab_refusal():
            raise top.error(f"builds.{name}", why)
    return hosts[0], hosts[1]


def _builds(r: Reader) -> dict[str, BuildSpec]:
    if not r.data:
        raise r.error("", "must define at least one build")
    builds: dict[str, BuildSpec] = {}
    for name in r.data:
        if not isinstance(name, str) or not _NAME.match(name):
            raise r.error(str(name), "build names are letters, digits and . _ + - (e.g. qemu-7.2)")
        b = r.sub(name)
        kind = b.get("kind", str, required=True)
        if kind not in BUILD_KINDS:  # one per module of harness/builds/
            raise b.error("kind", f"{kind!r} is not a build kind; use {', '.join(BUILD_KINDS)}")
        builds[name] = BUILD_KINDS.load(kind).from_matrix(name, b)
    return builds


def _groups(top: Reader, builds: dict[str, BuildSpec], default_accel: str) -> tuple[Group, ...]:
    raw = top.get("groups", list, required=True)
    groups = []
    for i, item in enumerate(raw):
        g = Reader(top.source, item, f"groups[{i}]")
        g.only("name", "builds", "against", "machines", "scenarios", "drivers", "accel")
        machines = g.names("machines")
        for j, machine in enumerate(machines):
            if not _MACHINE.match(machine) and machine != "latest-common":
                raise g.error(f"machines[{j}]", f"{machine!r} is not a pseries machine type "
                              "(pseries-X.Y, pseries, or latest-common)")
        refs = tuple(ref for j, name in enumerate(g.names("scenarios"))
                     for ref in _scenario_refs(g, f"scenarios[{j}]", name))
        drivers = g.names("drivers", tuple(DRIVERS)) if "drivers" in item else ("qemu",)
        against = g.names("against", builds) if "against" in item else ()
        accels = g.names("accel", ACCELS) if "accel" in item else (default_accel,)
        groups.append(Group(g.get("name", str, required=True), g.names("builds", builds), machines,
                            tuple(dict.fromkeys(refs)), tuple(dict.fromkeys(drivers)), against,
                            tuple(dict.fromkeys(accels))))
    if not groups:
        raise top.error("groups", "must list at least one group")
    return tuple(groups)


def _scenario_refs(g: Reader, key: str, name: str) -> tuple[ScenarioRef, ...]:
    """``scenario`` (all its variants) or ``scenario-variant`` (that one)."""
    scenario, _, variant = name.partition("-")
    declared = SCENARIOS.get(scenario)
    names = {v.name for v in declared.variants} if declared else set()
    if declared is None or (variant and variant not in names):
        every = [*SCENARIOS, *(ScenarioRef(s.name, v.name).name for s in SCENARIOS.values()
                               for v in s.variants if v.name)]
        close = difflib.get_close_matches(name, every, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(every)}"
        raise g.error(key, f"{name!r} is not a scenario or scenario-variant; {hint}")
    chosen = [variant] if variant else [v.name for v in declared.variants]
    return tuple(ScenarioRef(scenario, v) for v in chosen)


def _selections(r: Reader) -> dict[str, tuple[str, ...]]:
    selections = {}
    for name in r.data:
        selections[str(name)] = r.names(str(name))
    if not selections:
        raise r.error("", "must define at least one selection (e.g. smoke, nightly)")
    return selections


# What a cell can start here: two guests per cell, cells in parallel, under TCG.
MEMORY_MB = (256, 8192)
SMP = (1, 16)
MAXCPUS = (1, 64)


def _guest(r: Reader) -> GuestSettings:
    r.only("cpu", "memory_mb", "smp", "maxcpus", "firmware", "devices", "kernel")
    default = GuestSettings()
    firmware = r.get("firmware", str, default.firmware)
    if firmware not in FIRMWARES:
        raise r.error("firmware", f"{firmware!r} is not one of {', '.join(FIRMWARES)}")
    kernel = r.get("kernel", str, default.kernel)
    if kernel not in GUEST_KERNELS:
        raise r.error("kernel", f"{kernel!r} is not one of {', '.join(GUEST_KERNELS)} (goldmig: our "
                      "own kernel, guests/golden/kernel/; debian: Debian's generic kernel package)")
    smp = _in_range(r, "smp", default.smp, SMP, "virtual CPUs at boot")
    maxcpus = _in_range(r, "maxcpus", smp, MAXCPUS, "the most CPUs hotplug may reach")
    if maxcpus < smp:
        raise r.error("maxcpus", f"{maxcpus} is less than smp ({smp}); maxcpus is the most CPUs "
                      "the guest may have, at least smp")
    return GuestSettings(
        cpu=r.get("cpu", str, default.cpu),
        memory_mb=_in_range(r, "memory_mb", default.memory_mb, MEMORY_MB, "guest RAM in MiB"),
        smp=smp,
        maxcpus=maxcpus,
        firmware=firmware,
        devices=tuple(r.get("devices", list, list(default.devices))),
        kernel=kernel,
    )


def _in_range(r: Reader, key: str, default: int, bounds: tuple[int, int], what: str) -> int:
    value: int = r.get(key, int, default)
    if not bounds[0] <= value <= bounds[1]:
        raise r.error(key, f"{value} is out of range: {what}, from {bounds[0]} to {bounds[1]}")
    return value


def _timeouts(r: Reader) -> Timeouts:
    r.only("boot_s", "migrate_s", "beat_s")
    d = Timeouts()
    return Timeouts(float(r.get("boot_s", int, d.boot_s)), float(r.get("migrate_s", int, d.migrate_s)),
                    float(r.get("beat_s", int, d.beat_s)))


_CHECK_ID = re.compile(r"^[a-z0-9*?][a-z0-9*?-]*$")


def _check_ids(k: Reader) -> tuple[str, ...]:
    """``check``: one check id or a list of them (globs allowed), as the report names checks."""
    if "check" not in k.data:
        raise k.error("check", "missing: name the check(s) this entry explains, e.g. "
                      "check: timer-ticks-on-schedule (a check's name in lower case, dashes "
                      "between words; the report lists each cell's checks by id)")
    ids = k.names("check") if isinstance(k.data["check"], list) else (k.get("check", str),)
    for i, item in enumerate(ids):
        if not _CHECK_ID.match(item):
            where = f"check[{i}]" if isinstance(k.data["check"], list) else "check"
            raise k.error(where, f"{item!r} is not a check id: a check's name in lower case with "
                          "dashes between words (globs * and ? allowed), e.g. timer-ticks-on-schedule")
    return ids


def _known(top: Reader, source: str) -> tuple[KnownFailure, ...]:
    known = []
    for i, item in enumerate(top.get("known_failures", list, [])):
        k = Reader(source, item, f"known_failures[{i}]")
        k.only("cells", "check", "match", "reason", "evidence", "intermittent")
        checks = _check_ids(k)
        match = k.get("match", str, required=True)
        try:
            re.compile(match)
        except re.error as exc:
            raise k.error("match", f"is not a valid regular expression: {exc}") from None
        cells = k.data.get("cells")
        patterns = k.names("cells") if isinstance(cells, list) else (k.get("cells", str, required=True),)
        known.append(KnownFailure(patterns, checks, match,
                                  k.get("reason", str, required=True),
                                  k.get("evidence", str, required=True),
                                  k.get("intermittent", bool, False)))
    return tuple(known)
