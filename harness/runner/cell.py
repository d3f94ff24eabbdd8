"""Run one cell: builds -> host pair -> golden guest -> scenario -> checks, with its evidence.

The runner never reports; it fills a :class:`CellRecord` that the pytest
plugin turns into Allure results, pass or fail.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.builds.model import Build, BuildInfo, MachineInfo
from harness.checks.machine_state import machine_state_checks
from harness.checks.result import CheckResult, Limits
from harness.checks.verdict import CellVerdict, completed, failure_checks, judge
from harness.drivers import DRIVERS
from harness.errors import ChecksFailed, HostOverloaded, MigrationFailed, ProductFailure
from harness.guest.image import GoldenImage, ensure_golden_image
from harness.hosts.local import LocalHost
from harness.matrix.model import Cell, Matrix, ScenarioRef
from harness.migration.run import MigrationResult
from harness.qemu.machine import MachineSetup, common_properties
from harness.runner.celllog import cell_log, log_verdict
from harness.runner.context import ScenarioContext
from harness.runner.evidence import keep_evidence
from harness.runner.explain import diff_last_hop, summarise_streams
from harness.runner.roles import Hop
from harness.runner.rundir import make_rundir
from harness.runner.side import stop_all
from harness.runner.timing import timed
from harness.scenarios import SCENARIOS
from harness.scenarios.declare import MachineChange, Needs, ScenarioResult
from harness.sites import site_for
from harness.sites.base import Site

_log = logging.getLogger("goldmig.cell")


class CellImpossible(Exception):
    """The cell cannot exist (e.g. a build lacks the machine type): skipped, with the reason."""


@dataclass
class CellRecord:
    """Everything worth reporting about one cell, filled in as it runs."""

    cell: Cell
    evidence: Path
    attempt: int = 1
    """Which run of the cell this is (``goldmig run --repeat``)."""
    parameters: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    observations: ScenarioResult | None = None
    migrations: list[MigrationResult] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    """Every migration attempted, in order; the last is the one that failed, if one did."""
    checks: list[CheckResult] = field(default_factory=list)
    verdict: CellVerdict | None = None
    """The checks judged against the known failures (None: the cell never got to its checks)."""
    not_kept: list[str] = field(default_factory=list)
    """Evidence that could not be kept (a full reports filesystem), one note per file."""


def resolve_machine(cell: Cell, src: BuildInfo, dst: BuildInfo) -> tuple[MachineInfo, MachineInfo]:
    """The machine type on both sides, or :class:`CellImpossible` saying which side lacks it."""
    name = cell.machine
    if name == "latest-common":
        common = sorted(set(src.pseries_versions()) & set(dst.pseries_versions()),
                        key=src.pseries_versions().index)
        if not common:
            raise CellImpossible(f"{cell.src} and {cell.dst} share no versioned pseries machine")
        name = common[-1]
    sides = []
    for build_name, info in ((cell.src, src), (cell.dst, dst)):
        machine = info.machine(name)
        if machine is None:
            versions = info.pseries_versions()
            have = f"{versions[0]} to {versions[-1]}" if versions else "none"
            raise CellImpossible(
                f"{build_name} (QEMU {info.version}) has no machine type {name} "
                f"(its versioned pseries types are {have})"
            )
        sides.append(machine)
    return sides[0], sides[1]


def run_cell(cell: Cell, matrix: Matrix, record: CellRecord, host: LocalHost | None = None) -> None:
    """Run ``cell`` to the end; raises ProductFailure, HarnessError or CellImpossible."""
    host = host or LocalHost()
    scenario = SCENARIOS[cell.scenario]
    variant = scenario.variant(cell.variant)
    needs = scenario.needs_of(cell.variant)
    site = site_for(matrix, cell)
    driver = DRIVERS.load(cell.driver)
    specs = (matrix.builds[cell.src], matrix.builds[cell.dst])
    started = time.monotonic()
    try:
        if why := site.refusal(cell.scenario, needs.local_builds) or driver.refusal(site, specs):
            raise CellImpossible(why)
        if needs.accel is not None and needs.accel != site.accel:
            raise CellImpossible(f"{ScenarioRef(cell.scenario, cell.variant).name} needs accel "
                                 f"{needs.accel}; this cell runs {site.accel} ({site.kind} hosts)")
        if needs.in_kernel_irqchip and not site.in_kernel_irqchip:
            raise CellImpossible(f"{ScenarioRef(cell.scenario, cell.variant).name} needs KVM's in-kernel "
                                 f"interrupt controller, which {site.kind} hosts lack (a POWER9 or later "
                                 "host has it; nested KVM falls back to QEMU's, kernel-irqchip=off)")
        with timed(record.phases, "provision"):
            # Both builds are checked before either QEMU starts to say what it supports.
            located = site.locate(specs[0], "a"), site.locate(specs[1], "b")
            src_info, dst_info = site.supports(located[0], "a"), site.supports(located[1], "b")
            image = ensure_golden_image(kernel=matrix.guest.kernel)
            builds = driver.builds(specs, located)
        src_machine, dst_machine = resolve_machine(cell, src_info, dst_info)
        _require(needs, cell, {cell.src: (src_info, src_machine), cell.dst: (dst_info, dst_machine)})
        base = _setup(matrix, site, image, src_machine, dst_machine)
        setups = {side: _apply(base, variant.change_for(side), machine, build) for side, machine, build
                  in (("src", src_machine, cell.src), ("dst", dst_machine, cell.dst))}
        record.parameters.update({
            "source build": f"{cell.src} (QEMU {src_info.version}, {src_info.package or 'path'})",
            "destination build": f"{cell.dst} (QEMU {dst_info.version}, {dst_info.package or 'path'})",
            "machine": setups["src"].machine_arg(),
            "firmware": base.firmware,
            "CPUs": f"{setups['src'].smp} (maxcpus {setups['src'].maxcpus})",
            "guest image": image.image_id,
            "hosts": site.describe(),
            "accel": site.accel,
            "driver": cell.driver,
        })
        if setups["dst"] != setups["src"]:
            record.parameters["destination machine"] = setups["dst"].machine_arg()
        _run_scenario(cell, matrix, site, record, host, builds, setups)
    finally:
        record.phases["total"] = time.monotonic() - started


def run_judged(cell: Cell, matrix: Matrix, record: CellRecord, host: LocalHost | None = None) -> CellVerdict:
    """Run ``cell`` and return its verdict (passed, known or fixed, in ``record.verdict`` too);
    raises :class:`ChecksFailed` only when the verdict is failed, and whatever else
    :func:`run_cell` raises (a scenario ended early, a harness error, CellImpossible)."""
    try:
        run_cell(cell, matrix, record, host)
    except ChecksFailed:
        if record.verdict is None or record.verdict.outcome == "failed":
            raise
    assert record.verdict is not None, "run_cell returned without judging the cell"
    return record.verdict


def _require(needs: Needs, cell: Cell, sides: dict[str, tuple[BuildInfo, MachineInfo]]) -> None:
    """CellImpossible, naming the build and what it lacks, unless both sides meet ``needs``."""
    for name, (info, machine) in sides.items():
        missing = [p for p in needs.machine_properties if p not in machine.properties]
        if missing:
            raise CellImpossible(f"{name} (QEMU {info.version}) {machine.name} has no machine "
                                 f"property {', '.join(missing)}")
        if needs.min_qemu and _version(info.version) < needs.min_qemu:
            raise CellImpossible(f"{name} is QEMU {info.version}; this scenario needs "
                                 f"{needs.min_qemu[0]}.{needs.min_qemu[1]} or newer")
        wanted = needs.min_machine
        if wanted and _version(machine.name.removeprefix("pseries-")) < wanted:
            raise CellImpossible(f"{machine.name} is older than pseries-{wanted[0]}.{wanted[1]}, "
                                 f"which this variant needs")


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _setup(matrix: Matrix, site: Site, image: GoldenImage, src: MachineInfo,
           dst: MachineInfo) -> MachineSetup:
    guest = matrix.guest
    props, firmware = common_properties(src, dst, caps=site.guest_caps, firmware=guest.firmware, extra={})
    return MachineSetup(
        machine=src.name, properties=props, firmware=firmware, accel=site.accel, cpu=guest.cpu,
        memory_mb=guest.memory_mb, smp=guest.smp, maxcpus=guest.maxcpus, devices=guest.devices,
        kernel=image.kernel, initrd=image.initrd, append=image.kernel_cmdline,
    )


def _apply(setup: MachineSetup, change: MachineChange, machine: MachineInfo, build: str) -> MachineSetup:
    """``setup`` with a variant's change for one side; a property that side lacks is impossible."""
    for key, _ in change.properties:
        if key not in machine.properties:
            raise CellImpossible(f"{build}'s {machine.name} has no machine property {key}")
    properties = dict(setup.properties) | dict(change.properties)
    smp = change.smp or setup.smp
    return replace(setup, properties=tuple(properties.items()), devices=setup.devices + change.devices,
                   smp=smp, maxcpus=max(change.maxcpus or setup.maxcpus, smp),
                   maxmem_mb=change.maxmem_mb or setup.maxmem_mb,
                   memory_slots=change.memory_slots or setup.memory_slots,
                   dimms=setup.dimms + change.dimms)


def _run_scenario(
    cell: Cell, matrix: Matrix, site: Site, record: CellRecord, host: LocalHost,
    builds: tuple[Build, Build], setups: dict[str, MachineSetup],
) -> None:
    rundir = make_rundir()  # evidence moves to reports/ afterwards, whatever happened
    try:
        with cell_log(rundir, cell.id):  # closed before the evidence moves
            _log.info("on %s; %s", site.describe(),
                      "; ".join(f"{k}: {v}" for k, v in record.parameters.items()))
            _drive(cell, matrix, site, record, host, builds, setups, rundir)
    finally:
        settled = record.verdict is not None and record.verdict.outcome in ("passed", "known")
        record.not_kept = keep_evidence(rundir, record.evidence,
                                        keep_stream=keeps_stream(matrix.keep_streams, settled))


def _drive(
    cell: Cell, matrix: Matrix, site: Site, record: CellRecord, host: LocalHost,
    builds: tuple[Build, Build], setups: dict[str, MachineSetup], rundir: Path,
) -> None:
    """Open the driver, run the scenario, judge its checks; raise what the verdict says."""
    readable = sorted({setups["src"].kernel.parent, setups["src"].initrd.parent})
    recording = matrix.keep_streams != "none"
    scenario = SCENARIOS[cell.scenario]
    limits = Limits(matrix.tb_slack_ms)
    try:
        with ExitStack() as stack:
            driver = DRIVERS.load(cell.driver).open(site, builds, rundir, readable, recording, host, stack,
                                                   record.phases)
            record.parameters["driver"] = driver.label
            _log.info("driver %s; roles placed: %s", driver.label, ", ".join(
                f"{role} on {on.name}" for role, on in driver.placement.hosts.items()))
            ctx = ScenarioContext(
                builds, setups, scenario.variant(cell.variant), rundir, matrix.timeouts, limits,
                driver, stack, readable, record_stream=recording,
                phases=record.phases, migrations=record.migrations, hops=record.hops,
            )
            try:
                record.observations = scenario.run(ctx, ctx.variant)
                with timed(record.phases, "check"):
                    record.checks = [*record.observations.checks(limits), *completed(record.migrations),
                                     *machine_state_checks(record.migrations)]
                stop_all(ctx.started)  # the QEMUs are not needed any more; the stack would stop them in turn
            except MigrationFailed:
                if site.builds_here and record.hops:  # the diff records reference streams here
                    hop = record.hops[-1]
                    diff_last_hop(rundir, hop, (ctx.build_of(hop.src), ctx.build_of(hop.dst)),
                                  setups["src"])
                raise
            finally:
                summarise_streams(rundir)
                for side in ctx.started:
                    if side.console.corrupt_lines:
                        (rundir / f"{side.role}-corrupt-lines.txt").write_text(
                            "\n".join(side.console.corrupt_lines) + "\n")
        record.verdict = judge(record.checks, matrix.known_failures_for(cell.id))
        log_verdict(record.verdict)
        if record.verdict.outcome == "broken":
            raise HostOverloaded(record.verdict.reason)
        if any(c.counts_against for c in record.checks):
            raise ChecksFailed(record.checks)
    except ProductFailure as exc:
        if not isinstance(exc, ChecksFailed):  # the scenario ended early: what it did not measure
            record.checks = [*record.checks, *machine_state_checks(record.migrations),
                             *failure_checks(exc)]
            record.verdict = judge(record.checks, matrix.known_failures_for(cell.id))
            log_verdict(record.verdict)
        raise


def keeps_stream(policy: str, settled: bool) -> bool:
    """Whether a cell keeps its recorded streams: ``all``, or ``failed`` and the cell is not
    ``settled`` (passed, or known: its known failures' entries carry their evidence)."""
    return policy == "all" or (policy == "failed" and not settled)
