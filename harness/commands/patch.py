"""Per-patch mode: a candidate build against every reference build of the matrix, and, given a
base, the base in the same run, so that each candidate cell is judged against its base twin
(:mod:`harness.commands.patch_compare`) rather than against the known failures.

It writes a matrix of its own (the references from matrix.yaml, the candidate and the base,
one group per reference and each of them, the machine types they share, the scenarios, the
same known failures) and runs it like any other. Every build is checked and asked what it
supports where the matrix runs it (this machine, or both lab hosts) before any cell starts:
a source build is compiled (or found in the cache) then.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness.builds.model import BuildInfo
from harness.builds.spec import BuildSpec
from harness.commands.patch_compare import BASE, CANDIDATE
from harness.errors import ConfigError
from harness.matrix.load import load_matrix
from harness.matrix.model import Matrix
from harness.sites import site_for
from harness.sites.base import Site

SELECTION = "patch"
OWN_SCENARIOS = ("baseline-idle", "timebase", "intc-dual", "phb-windows", "xiveblocks-xive",
                 "caps-vsx", "hotplug-cpu-0ms", "pingpong")
"""What the candidate (and the base) runs on both sides: one variant of each scenario family a
patch can break by what it migrates (vmstate, linkloss and the fault campaign test the harness,
not the patch), on the newest machine type the candidate and base share and on :data:`OLD_MACHINE`."""
CROSS_SCENARIOS = ("baseline-idle",)
"""What it runs against each reference build, as source and as destination: the idle 2-CPU
guest, whose stream carries every device the default machine has (XIVE and XICS in dual mode,
the PHB, both CPUs' state, compared field by field), so a format or compat change shows there;
the families' own devices are covered by :data:`OWN_SCENARIOS`. With five references the job
is 66 cells: 6 to 7 minutes on 2 cores, then the reruns of what differs."""
OLD_MACHINE = "pseries-7.2"
"""The older machine type a patch job also runs on (compat properties of old types)."""


def build_entry(matrix: Matrix, given: str, firmware: Path | None) -> dict[str, Any]:
    """A build for the generated matrix: a build name of ``matrix`` (any kind), or the path of
    a ``qemu-system-ppc64`` with its ``firmware``."""
    raw: dict[str, Any] = yaml.safe_load(Path(matrix.source).read_text())
    if given in raw.get("builds", {}):
        return dict(raw["builds"][given])
    if firmware is None:
        raise ConfigError("the command line", "--firmware", f"{given!r} is no build of {matrix.source}, so "
                          "it is taken as a qemu-system-ppc64 path, which needs --firmware (its pc-bios)")
    return {"kind": "path", "binary": str(Path(given).resolve()), "firmware": str(firmware.resolve())}


def source_entries(tree: Path, series: list[Path], configure: list[str],
                   firmware: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base (the tree as it is) and the candidate (the tree plus the series) as source builds."""
    base: dict[str, Any] = {"kind": "source", "tree": str(tree.resolve()), "configure": list(configure)}
    if firmware is not None:
        base["firmware"] = str(firmware.resolve())
    return base, {**base, "patches": [str(p.resolve()) for p in series]}


def patch_matrix(matrix: Matrix, candidate: dict[str, Any], base: dict[str, Any] | None,
                 machines: list[str] | None, scenarios: list[str] | None,
                 not_references: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The per-patch matrix as YAML data: the candidate and the base each on both sides
    (:data:`OWN_SCENARIOS`) and with every reference build both ways (:data:`CROSS_SCENARIOS`),
    on the newest machine type each pair shares and :data:`OLD_MACHINE`. ``machines`` and
    ``scenarios`` replace those choices; ``not_references``: the matrix's builds that are the
    base or the candidate, not references for them."""
    raw: dict[str, Any] = yaml.safe_load(Path(matrix.source).read_text())
    ours = {CANDIDATE: candidate, **({BASE: base} if base is not None else {})}
    raw["builds"].update(ours)
    specs = _loaded(raw).builds
    site = site_for(matrix)
    versions = {name: set(_supports(specs[name], site).pseries_versions()) for name in ours}
    own = _machines(machines, set.intersection(*versions.values()))
    groups = [{"name": f"{name}-itself", "builds": [name], "machines": own,
               "scenarios": list(scenarios or OWN_SCENARIOS)} for name in ours if own]
    for reference, spec in matrix.builds.items():
        if reference in ours or reference in not_references:
            continue
        theirs = set(_supports(spec, site).pseries_versions())
        for name in ours:
            shared = _machines(machines, versions[name] & theirs)
            if shared:
                groups.append({"name": f"{name}-and-{reference}", "builds": [name, reference],
                               "machines": shared, "scenarios": list(scenarios or CROSS_SCENARIOS)})
    raw["groups"] = groups
    raw["selections"] = {SELECTION: [f"{name}>*" for name in ours] + [f"*>{name}/*" for name in ours]}
    raw["default_selection"] = SELECTION
    return raw


def _machines(given: list[str] | None, shared: set[str]) -> list[str]:
    """The machine types of a pair's group: ``given``, else the newest the pair shares and
    :data:`OLD_MACHINE` when they share it too (none when they share no type)."""
    if given is not None:
        return list(given)
    if not shared:
        return []
    newest = max(shared, key=lambda m: tuple(map(int, m[8:].split("."))))
    return [newest, *([OLD_MACHINE] if OLD_MACHINE in shared and newest != OLD_MACHINE else [])]


def _loaded(raw: dict[str, Any]) -> Matrix:
    """``raw`` validated as the matrix loader validates any matrix (a bad build says which)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="goldmig-patch-") as out:
        yaml.safe_dump(raw, out, sort_keys=False)
        out.flush()
        return load_matrix(Path(out.name))


def _supports(spec: BuildSpec, site: Site) -> BuildInfo:
    """What ``spec`` supports where the matrix runs it, asked before any cell starts.

    The build must be where both sides run it (on a lab, installed on both hosts: a path on
    this machine is no use to them): a missing one is refused here, naming the path and the host.
    """
    site.locate(spec, "b")
    return site.supports(site.locate(spec, "a"), "a")


def write_generated_matrix(data: dict[str, Any], path: Path, command: str) -> Path:
    """A matrix a command made for its run (patch, faults), marked as such."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# generated by `goldmig {command}`; do not edit\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path
