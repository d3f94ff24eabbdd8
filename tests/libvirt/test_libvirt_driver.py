"""The libvirt driver with real libvirtd daemons (bookworm's 9.0 on the host, trixie's 11.3 in
its root), each private to a namespace host: migrations both ways, a daemon that cannot start,
and what a killed run leaves behind."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.hosts.netns import NamespacePair, sweep_stale
from harness.hosts.setns import list_namespaces
from harness.libvirt.daemon import LibvirtDaemon, LibvirtDaemonError, sweep_homes
from harness.matrix.load import load_matrix
from harness.matrix.model import GuestSettings, Matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_cell

pytestmark = pytest.mark.slow

ONE_CPU = GuestSettings(smp=1, maxcpus=1)
"""QEMU 10.0 to 10.0 migrates a 1-CPU guest cleanly (2 CPUs meet the known RTAS-stopped bug)."""
IPIS = "IPIs delivered between every pair of CPUs"


def _not_passed(record: CellRecord) -> list[tuple[str, str]]:
    """The checks that did not pass, with their verdicts."""
    return [(c.invariant, c.verdict.value) for c in record.checks if not c.ok]


def _libvirt_one_cpu(*states: str) -> list[tuple[str, str]]:
    """What a clean libvirt cell on one CPU does not pass: the machine state of each hop (libvirt
    ends the source before it can be read: not applicable, its direct twin compares it) and the
    IPIs (no second CPU), both not applicable."""
    return [(IPIS, "not applicable"), *((name, "not applicable") for name in states)]


def test_pingpong_both_directions_through_two_daemons(tmp_path: Path) -> None:
    """a to b peer to peer (migrateToURI3 over qemu+ssh), b back to a with migrate3; both
    streams recorded through the relay, every check on the guest passes."""
    matrix = dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), guest=ONE_CPU,
                                 keep_streams="all")
    record = _run(tmp_path, matrix, "libvirt:qemu-10.0>qemu-10.0/latest-common/pingpong")
    assert sorted(_not_passed(record)) == sorted(_libvirt_one_cpu(
        "machine state across hop 1", "machine state across hop 2"))
    assert len(record.migrations) == 2
    assert all(m.figures.status == "completed" and m.stream_bytes > 10_000_000 for m in record.migrations)
    assert record.parameters["driver"].startswith("libvirt 11.")
    assert (tmp_path / "evidence" / "stream-dst-back.bin").stat().st_size > 10_000_000


def test_libvirt_9_to_11_with_the_release_pair(tmp_path: Path) -> None:
    """bookworm's libvirtd with QEMU 7.2 to trixie's with QEMU 10.0, as on two real hosts."""
    matrix = dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), guest=ONE_CPU)
    record = _run(tmp_path, matrix, "libvirt:qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle")
    assert sorted(_not_passed(record)) == sorted(_libvirt_one_cpu("machine state"))
    assert record.parameters["driver"].startswith("libvirt 9.0.0 > 11.")
    figures = record.migrations[0].figures
    assert figures.total_time_ms > 0 and 0 < figures.downtime_ms < figures.total_time_ms


def _run(tmp_path: Path, matrix: Matrix, cell_id: str) -> CellRecord:
    cell = next(c for c in matrix.cells() if c.id == cell_id)
    record = CellRecord(cell, tmp_path / "evidence")
    run_cell(cell, matrix, record)
    return record


def test_a_daemon_that_cannot_start_breaks_with_its_log(tmp_path: Path) -> None:
    daemon = LibvirtDaemon("a", tmp_path)
    try:
        with NamespacePair(Path("/"), side_mounts=(daemon.mounts(), ())) as pair:
            assert pair.workdir is not None
            daemon.configure(pair.a.address, pair.workdir / "client_key", pair.workdir / "known_hosts")
            (daemon.home / "etc/qemu.conf").write_text('user = "no-such-user-goldmig"\n')
            with pytest.raises(LibvirtDaemonError) as raised:
                daemon.start(pair.host("a"))
            daemon.stop()
    finally:
        daemon.stop()
    assert "libvirtd of side a" in str(raised.value)
    assert "no-such-user-goldmig" in str(raised.value)  # libvirtd's own log, attached
    assert not daemon.home.exists()


_KILLED_RUN = textwrap.dedent("""
    import sys, time
    from contextlib import ExitStack
    from pathlib import Path
    from harness.builds.host_package import HostPackageBuild
    from harness.drivers.libvirt import open_libvirt
    rundir = Path(sys.argv[1])
    build = HostPackageBuild("qemu-7.2").provision()
    stack = ExitStack()
    driver = open_libvirt((build, build), rundir, [], stack)
    dom = driver.daemons["a"].conn.createXML(
        "<domain type='qemu'><name>left</name><memory unit='MiB'>64</memory>"
        "<os><type arch='ppc64' machine='pseries-7.2'>hvm</type></os>"
        "<devices><emulator>/usr/bin/qemu-system-ppc64</emulator>"
        "<controller type='usb' model='none'/><memballoon model='none'/></devices></domain>",
        1)  # VIR_DOMAIN_START_PAUSED
    print(driver.daemons["a"].home, driver.pair.a.netns, flush=True)
    time.sleep(600)
""")


def test_a_domain_left_by_a_killed_run_is_swept(tmp_path: Path) -> None:
    run = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(tmp_path)], stdout=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert run.stdout is not None
    home, netns = run.stdout.readline().split()
    assert _qemu_in(netns), "the domain's QEMU should run before the kill"
    run.send_signal(signal.SIGKILL)
    run.wait()
    time.sleep(0.5)
    sweep_stale()
    removed = sweep_homes()
    assert netns not in list_namespaces()
    assert Path(home) in removed and not Path(home).exists()
    assert not _qemu_in(netns)


def _qemu_in(netns: str) -> bool:
    """A qemu-system-ppc64 whose network namespace is ``netns`` (by its /proc entry)."""
    target = Path(f"/run/netns/{netns}")
    if not target.exists():
        return False
    want = os.stat(target).st_ino
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if "qemu-system-ppc" in (proc / "comm").read_text() and \
                    os.stat(proc / "ns/net").st_ino == want:
                return True
        except OSError:
            continue
    return False
