"""Lab hosts (``hosts: lab``) end to end, against stand-ins for real POWER hosts.

A stand-in is a namespace host that shares nothing with the harness: its sshd
runs in a read-only view of the trixie root with a /tmp of its own, so every
file, socket and stream goes over SSH exactly as to a lab machine. The one
thing a stand-in cannot be is a POWER host with KVM: it runs ``accel: tcg``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from harness.checks.result import Verdict
from harness.commands.standin import WORKDIR, lab_section, standin_matrix
from harness.hosts import sshkeys
from harness.hosts.netns import NamespacePair
from harness.hosts.ssh import HostKeyRejected, SshHost
from harness.matrix.load import load_matrix
from harness.matrix.model import KnownFailure, Matrix
from harness.runner.cell import CellImpossible, CellRecord, run_judged
from harness.sites.lab import lab_target

pytestmark = pytest.mark.slow

Commands = Callable[[str], list[str]]
Entries = Callable[..., tuple[KnownFailure, ...]]
LAB_10_0 = ("*>lab-qemu/*",)
"""The stand-ins' build is trixie's QEMU 10.0, which flips MSR[ME] on load (matrix.yaml's entry
for every 10.0 destination, declared for these cells)."""


@pytest.fixture(scope="module")
def standins(trixie_root: Path) -> Iterator[NamespacePair]:
    """Two lab host stand-ins (nothing shared), for the whole module."""
    with NamespacePair(trixie_root) as pair:
        yield pair


def _lab_matrix(tmp_path: Path, pair: NamespacePair, *, keep_streams: str = "all",
                scenario: str = "baseline-idle", known_hosts: Path | None = None,
                known_failures: tuple[KnownFailure, ...] = ()) -> Matrix:
    """A matrix.yaml as a lab would write it, pointing at the stand-ins. One guest CPU: these
    tests are about the lab plumbing, and the stand-ins' QEMU 10.0 leaves a second CPU without
    interrupts after a migration (a known failure of matrix.yaml)."""
    data = standin_matrix(pair, [scenario], ["pseries-7.2"], keep_streams)
    data["lab"] = lab_section(pair, known_hosts)
    data["guest"] = {"smp": 1}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return dataclasses.replace(load_matrix(path), known_failures=known_failures)


def _plumbing_only(record: CellRecord, known_for_machine_state: Callable[..., set[str]],
                   hops: int = 1) -> None:
    """Every check passed but MSR[ME], flipped on each hop (and explained), and the IPIs, which
    one CPU has nothing to measure for."""
    known = known_for_machine_state(record)
    assert known == ({"machine-state-cpu-0-msr"} if hops == 1 else
                     {f"machine-state-cpu-0-msr-across-hop-{n}" for n in range(1, hops + 1)}), known
    rest = [c for c in record.checks if not c.id.startswith("machine-state-")]
    assert [(c.invariant, c.verdict) for c in rest if not c.ok] == [
        ("IPIs delivered between every pair of CPUs", Verdict.NOT_APPLICABLE)], rest


def _run(matrix: Matrix, tmp_path: Path) -> CellRecord:
    """Run the matrix's cell; raises ChecksFailed only when it failed."""
    (cell,) = matrix.cells()
    record = CellRecord(cell, tmp_path / "evidence")
    run_judged(cell, matrix, record)
    return record


def _remote(label: str, matrix: Matrix) -> SshHost:
    assert matrix.lab is not None
    return SshHost(lab_target(matrix.lab["ab".index(label)]))


def _qemus_in(commands: Commands, pair: NamespacePair, label: str) -> list[str]:
    return [c for c in commands(pair.side(label).netns) if "qemu-system" in c]


def test_recorded_baseline_goes_through_the_harness_and_leaves_the_hosts_clean(
    standins: NamespacePair, tmp_path: Path, commands: Commands,
    machine_state_entries: Entries, machine_state_known: Callable[..., set[str]],
) -> None:
    matrix = _lab_matrix(tmp_path, standins, known_failures=machine_state_entries(msr=LAB_10_0))
    record = _run(matrix, tmp_path)

    _plumbing_only(record, machine_state_known)
    assert "QEMU 10.0." in record.parameters["source build"]
    assert "QEMU 10.0." in record.parameters["destination build"]
    assert record.parameters["hosts"] == f"lab {standins.a.address} > {standins.b.address}"
    assert record.parameters["accel"] == "tcg"
    evidence = tmp_path / "evidence"
    argv = (evidence / "src-argv.txt").read_text().splitlines()
    assert argv[argv.index("-accel") + 1] == "tcg"
    kernel = Path(argv[argv.index("-kernel") + 1])
    assert kernel.parent == Path(WORKDIR) / "files", "the guest is staged on the host"
    # QEMU's own output and the serial log were written on the hosts and fetched back.
    assert "dst-qemu.log" in {p.name for p in evidence.iterdir()}
    assert "##GM" in (evidence / "src-serial.log").read_text()
    # Recorded: the source sends to its own loopback, forwarded to the harness's relay.
    uri = re.search(r'"execute": "migrate", "arguments": \{"uri": "([^"]+)"',
                    (evidence / "src-qmp.log").read_text())
    assert uri and uri[1].startswith("tcp:127.0.0.1:")
    assert (evidence / "stream-src-dst.bin").stat().st_size == record.migrations[0].stream_bytes > 0
    assert _qemus_in(commands, standins, "a") == _qemus_in(commands, standins, "b") == []
    for label in "ab":
        with _remote(label, matrix) as host:
            assert host.run_command(["ls", "-A", f"{WORKDIR}/runs"]).stdout == ""


def test_unrecorded_stream_crosses_the_lab_network_directly(
    standins: NamespacePair, tmp_path: Path,
    machine_state_entries: Entries, machine_state_known: Callable[..., set[str]],
) -> None:
    record = _run(_lab_matrix(tmp_path, standins, keep_streams="none",
                              known_failures=machine_state_entries(msr=LAB_10_0)), tmp_path)

    _plumbing_only(record, machine_state_known)
    uri = re.search(r'"uri": "tcp:([\d.]+):(\d+)"', (tmp_path / "evidence" / "src-qmp.log").read_text())
    assert uri and uri[1] == standins.b.address and int(uri[2]) > 0


def test_ping_pong_returns_to_the_source_host(
    standins: NamespacePair, tmp_path: Path,
    machine_state_entries: Entries, machine_state_known: Callable[..., set[str]],
) -> None:
    record = _run(_lab_matrix(tmp_path, standins, scenario="pingpong",
                              known_failures=machine_state_entries(msr=LAB_10_0)), tmp_path)

    _plumbing_only(record, machine_state_known, hops=2)
    assert [m.figures.status for m in record.migrations] == ["completed", "completed"]
    assert (tmp_path / "evidence" / "stream-dst-back.bin").stat().st_size > 0


def test_a_changed_host_key_fails_the_cell_with_what_to_do(
    standins: NamespacePair, tmp_path: Path, commands: Commands
) -> None:
    assert standins.workdir is not None
    impostor = sshkeys.generate(tmp_path / "impostor", "impostor")
    lines = (standins.workdir / "known_hosts").read_text().splitlines()
    forged = [f"{line.split()[0]} {impostor.public}" if standins.b.address in line else line
              for line in lines]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(forged) + "\n")
    matrix = _lab_matrix(tmp_path, standins, known_hosts=known)

    with pytest.raises(HostKeyRejected, match="HOST KEY CHANGED") as caught:
        _run(matrix, tmp_path)
    assert standins.b.address in str(caught.value) and "ssh-keygen -R" in str(caught.value)
    assert _qemus_in(commands, standins, "a") == []


def test_scenarios_that_need_local_builds_are_impossible_on_lab_hosts(
    standins: NamespacePair, tmp_path: Path
) -> None:
    with pytest.raises(CellImpossible, match="lab builds live on the lab hosts"):
        _run(_lab_matrix(tmp_path, standins, scenario="goldenload"), tmp_path)
