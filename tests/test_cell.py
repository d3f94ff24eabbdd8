"""Real cells end to end: what they record and keep, on local and namespace hosts.

A 7.2 to 10.0 cell never passes now: the destination flips MSR[ME] and 7.2 sends a stale
decrementer (matrix.yaml's machine-state entries). "Passes" below means every other check passed
and those two entries explain the rest: the cell is known."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.checks import devices, migrated_timebase
from harness.checks.generic import Observations
from harness.checks.result import Verdict
from harness.guest.image import ensure_golden_image
from harness.matrix.load import load_matrix
from harness.matrix.model import GuestSettings
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, keeps_stream, run_judged

pytestmark = pytest.mark.slow


IPIS = "IPIs delivered between every pair of CPUs"
MIGRATED_TB = migrated_timebase.NAME  # KVM's: a TCG cell does not list it
DEVICES = devices.NAME
ONE_CPU = GuestSettings(smp=1, maxcpus=1)
"""Every Debian pair loses a secondary CPU's or every CPU's timer with 2 CPUs (known failures in
matrix.yaml); tests about what a passing cell records run the guest on one."""


def _run(tmp_path: Path, cell_id: str, **matrix_overrides: object) -> CellRecord:
    """Run one cell of the shipped matrix (with some settings changed) into tmp_path/evidence;
    raises ChecksFailed only when the cell failed (a known cell returns, judged)."""
    matrix = dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), **matrix_overrides)  # type: ignore[arg-type]
    cell = next(c for c in matrix.cells() if c.id == cell_id)
    record = CellRecord(cell, tmp_path / "evidence")
    run_judged(cell, matrix, record)
    return record


def _known_for_machine_state_alone(record: CellRecord, machine_state_known: Callable[..., set[str]],
                                   no_virtio: bool = False) -> None:
    """The 7.2 to 10.0 cell with one CPU: every check passed but the machine state's, which
    the MSR[ME] and DECR entries explain: known. ``no_virtio``: Debian's kernel, without a
    virtio driver, has no device to read."""
    failed = machine_state_known(record)
    assert failed == {"machine-state-cpu-0-msr", "machine-state-cpu-0-decr"}, failed
    rest = [c for c in record.checks if not c.id.startswith("machine-state-")]
    idle = [c.invariant for c in rest if c.verdict is Verdict.NOT_APPLICABLE]
    assert idle == [IPIS, *([DEVICES] if no_virtio else [])], \
        "one CPU has no other CPU to send an IPI to, and nothing else is idle"
    assert MIGRATED_TB not in {c.invariant for c in rest}, "a TCG cell lists no KVM-only check"
    assert rest and all(c.ok for c in rest if c.verdict is not Verdict.NOT_APPLICABLE)


def _our_namespaces() -> list[str]:
    from harness.hosts.setns import list_namespaces

    return [n for n in list_namespaces() if n.startswith(f"gm-{os.getpid()}-")]


def test_baseline_cell_passes_every_check_and_keeps_evidence(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    """Every check passes but the machine state's known MSR[ME] and DECR differences; a known
    cell, like a passing one, drops its stream under ``keep_streams: failed`` (its known
    failures' entries carry their evidence) and keeps its summary."""
    record = _run(tmp_path, "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle", hosts="local", guest=ONE_CPU)

    _known_for_machine_state_alone(record, machine_state_known)
    obs = record.observations
    assert isinstance(obs, Observations)
    (migration,) = record.migrations
    assert migration.figures.status == "completed" and migration.figures.transferred_bytes > 0
    assert obs.downtime_ms == migration.figures.downtime_ms
    assert [c.cpu for c in obs.timebase.cpus] == [0]
    assert all(c.max_back == 0 and c.samples > 1000 for c in obs.timebase.cpus)
    assert [g.cpu for g in obs.tick_gaps] == [0] and all(g.first_after for g in obs.tick_gaps)
    assert obs.probe_before.intc == obs.probe_after.intc == "XIVE"
    assert record.parameters["CPUs"] == "1 (maxcpus 1)"
    assert record.parameters["firmware"] == "vof"
    assert "QEMU 10.0." in record.parameters["destination build"]
    assert record.parameters["guest image"] == ensure_golden_image(kernel="goldmig").image_id
    kept = {p.name for p in (tmp_path / "evidence").iterdir()}
    assert {"src-serial.log", "dst-serial.log", "src-qmp.log", "dst-qmp.log"} <= kept
    assert "stream-src-dst.bin" not in kept, "a known cell drops its stream"
    assert {"stream-src-dst.summary.txt", "stream-src-dst.summary.json"} <= kept
    assert set(record.phases) >= {"provision", "boot", "migrate", "check", "total"}


def test_guest_kernel_debian_runs_the_cell_on_debians_kernel(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    """``guest.kernel: debian`` boots the image with Debian's generic kernel, with the same
    outcome as ours."""
    record = _run(tmp_path, "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle", hosts="local",
                  guest=dataclasses.replace(ONE_CPU, kernel="debian"))

    _known_for_machine_state_alone(record, machine_state_known, no_virtio=True)
    debian = ensure_golden_image(kernel="debian")
    assert record.parameters["guest image"] == debian.image_id
    assert debian.kernel_identity().version.endswith("-powerpc64le")


@pytest.mark.parametrize(("policy", "settled", "kept"), [
    ("failed", True, False), ("failed", False, True),
    ("all", True, True), ("all", False, True),
    ("none", True, False), ("none", False, False),
])
def test_stream_retention_policy(policy: str, settled: bool, kept: bool) -> None:
    assert keeps_stream(policy, settled) is kept


def test_cell_on_namespace_hosts_crosses_the_veth_and_leaves_nothing(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    record = _run(tmp_path, "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle", hosts="netns",
                  keep_streams="all", guest=ONE_CPU)

    _known_for_machine_state_alone(record, machine_state_known)
    evidence = tmp_path / "evidence"
    migrate_uri = re.search(r'"execute": "migrate", "arguments": \{"uri": "tcp:([\d.]+):\d+"',
                            (evidence / "src-qmp.log").read_text())
    assert migrate_uri and ipaddress.ip_address(migrate_uri[1]) in ipaddress.ip_network("198.18.0.0/15")
    assert (evidence / "stream-src-dst.bin").stat().st_size == record.migrations[0].stream_bytes
    assert {"sshd-a.log", "sshd-b.log"} <= {p.name for p in evidence.iterdir()}
    assert _our_namespaces() == []


def test_link_lost_mid_migration_fails_the_migration_and_the_source_carries_on(tmp_path: Path) -> None:
    from harness.scenarios.linkloss import LinkLossObservations

    record = _run(tmp_path, "qemu-10.0>qemu-10.0/pseries-7.2/linkloss", hosts="netns")

    obs = record.observations
    assert isinstance(obs, LinkLossObservations)
    assert re.match(r"Migration(Failed|Timeout): ", obs.migration_outcome), obs.migration_outcome
    assert obs.source_status == "running" and not obs.destination_running
    assert all(c.ok for c in record.checks)
    assert _our_namespaces() == []


def test_golden_stream_of_one_build_loads_into_another(tmp_path: Path) -> None:
    """No hop migrates a running source (the golden stream is saved, then loaded): no machine
    state is compared, and the cell passes."""
    from harness.scenarios.goldenload import GoldenLoadObservations

    record = _run(tmp_path, "qemu-7.2>qemu-10.0/pseries-7.2/goldenload", hosts="local", guest=ONE_CPU)

    obs = record.observations
    assert isinstance(obs, GoldenLoadObservations)
    assert obs.stream_intc == obs.probe.intc == "XIVE"
    assert all(c.ok for c in record.checks)
    assert not any(p.name.startswith("golden-") for p in (tmp_path / "evidence").iterdir())


def test_two_cpus_on_a_10_0_destination_lose_cpu_1s_timer_within_two_seconds(tmp_path: Path) -> None:
    """The SMP guest's finding, end to end: after 7.2 -> 10.0, CPU 1 never ticks again (QEMU
    10.0 leaves it "RTAS stopped"); the tick check fails about a second past the bound, with the
    message its known failure expects, and the known failure explains the cell (with the machine
    state's MSR[ME] and DECR entries, which explain only machine-state checks)."""
    record = _run(tmp_path, "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle", hosts="local")
    assert record.verdict is not None and record.verdict.outcome == "known", record.verdict.reason
    (ticks,) = [v for v in record.verdict.checks if v.check.invariant == "timer ticks on schedule"]
    assert "gaps: CPU 0 " in ticks.check.message and "CPU 1 none" in ticks.check.message
    assert "evidence: CPU 1: no tick after" in ticks.check.message
    matrix = load_matrix(REPO_ROOT / "matrix.yaml")
    (known,) = [k for k in matrix.known_failures_for("qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle")
                if k.explains(ticks.check.id, ticks.check.message)]
    assert "RTAS stopped" in known.reason and ticks.explained_by == known
    others = {v.explained_by.checks for v in record.verdict.checks
              if v.explained_by is not None and v.explained_by != known}
    assert others <= {("machine-state-cpu-*-msr*",), ("machine-state-cpu-*-decr*",)}, others
