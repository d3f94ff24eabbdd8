"""One migration hop between two real QEMUs (TCG, the golden guest on 2 CPUs): the result
carries both machine states, read with the destination held paused after the load.

- QEMU 7.2 to 7.2: the decrementer is not migrated; every CPU's DECR differs, TB does not.
- QEMU 10.0 to 10.0: the decrementer is migrated; what differs is MSR[ME] on every CPU
  (cleared on the destination: target/ppc/machine.c ``post_load_update_msr`` flips every
  MSR bit and stores the saved MSR back through ``hreg_store_msr``, which ignores a change
  of ME outside hypervisor state), and nothing else unexcused.
- A register changed on the held destination (GPR31 of CPU 0, through the gdbstub) before
  it is read shows as that one difference: the comparison is not vacuous.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from harness.builds.debian import ensure_suite_root
from harness.builds.model import Build
from harness.guest.agent import Agent
from harness.guest.image import ensure_golden_image
from harness.hosts.local import LocalHost
from harness.hosts.workspace import SharedWorkspace
from harness.machinestate import Difference, MachineState
from harness.migration import run
from harness.migration.run import MigrationResult, migrate
from harness.migration.transport import LocalTransport
from harness.qemu.argv import SidePaths, qemu_argv
from harness.qemu.gdbstub import write_register
from harness.qemu.machine import MachineSetup
from harness.qemu.process import QemuProcess

pytestmark = pytest.mark.slow

HOST_QEMU = "/usr/bin/qemu-system-ppc64"
ME = 1 << 12  # MSR[ME], machine check enable
PATTERN = "1111111111111111"  # the same bytes in either endianness the gdbstub may use


def _build(name: str) -> Build:
    if name == "qemu-7.2":
        return Build(name, Path("/"), HOST_QEMU)
    return Build(name, ensure_suite_root("trixie"), "/usr/bin/qemu-system-ppc64")


def _hop(build: Build, rundir: Path) -> MigrationResult:
    """Boot the golden guest on 2 CPUs, wait for its agent, migrate it to a second QEMU."""
    return _hops(build, rundir, ("src", "dst"))[0]


def _hops(build: Build, rundir: Path, roles: tuple[str, ...]) -> list[MigrationResult]:
    """Boot the golden guest on 2 CPUs in ``roles[0]``, wait for its agent, migrate it from
    each role to the next (a destination becomes the next hop's source)."""
    image = ensure_golden_image()
    setup = MachineSetup(
        machine="pseries-7.2",
        properties=(("cap-cfpc", "broken"), ("cap-sbbc", "broken"), ("cap-ibs", "broken"),
                    ("cap-ccf-assist", "off"), ("x-vof", "on")),
        firmware="vof", accel="tcg", cpu="POWER9", memory_mb=512, smp=2, maxcpus=2,
        devices=("virtio-rng-pci",), kernel=image.kernel, initrd=image.initrd,
        append=image.kernel_cmdline)
    workspace = SharedWorkspace(rundir, [image.kernel.parent])
    with ExitStack() as stack:
        sides = []
        for n, role in enumerate(roles):
            paths = SidePaths.for_role(rundir, role)
            argv = qemu_argv(build, setup, paths, incoming=n > 0)
            sides.append(stack.enter_context(QemuProcess(role, LocalHost(), build, argv, paths, workspace)))
            sides[-1].start()
        sides[0].monitor.cmd("cont")
        Agent(sides[0].console).hello(timeout=90)
        results = []
        for src, dst in itertools.pairwise(sides):
            results.append(migrate(src, dst, LocalTransport(rundir, dst.role), timeout=120, evidence=rundir))
            assert dst.monitor.cmd("query-status")["status"] == "running"
        return results


def _cpus(state: MachineState) -> list[str]:
    return [c.name for c in state if c.name.startswith("CPU ")]


def test_72_decrementer_differs_on_every_cpu_and_nothing_else(tmp_path: Path) -> None:
    result = _hop(_build("qemu-7.2"), tmp_path)

    state = result.machine_state
    assert state is not None, result.machine_state_unread
    assert _cpus(state.source) == _cpus(state.destination) == ["CPU 0", "CPU 1"]
    assert {(d.component, d.field) for d in state.differences} == {("CPU 0", "DECR"), ("CPU 1", "DECR")}
    for cpu in ("CPU 0", "CPU 1"):
        assert state.source[cpu]["TB"] == state.destination[cpu]["TB"]
    assert state.excused == ()
    assert 0 < state.hold_ms < 5000
    assert (tmp_path / "machine-src-dst-source.txt").read_text().startswith("### info registers -a")
    assert (tmp_path / "machine-src-dst-destination.txt").is_file()


def test_100_keeps_the_decrementer_and_loses_msr_me_on_every_cpu(tmp_path: Path) -> None:
    result = _hop(_build("qemu-10.0"), tmp_path)

    state = result.machine_state
    assert state is not None, result.machine_state_unread
    assert {(d.component, d.field) for d in state.differences} == {("CPU 0", "MSR"), ("CPU 1", "MSR")}
    for d in state.differences:
        assert int(d.source, 16) ^ int(d.destination, 16) == ME and int(d.source, 16) & ME, d
    assert all(e.rule.field in ("RES length", "HF", "iidx", "didx") for e in state.excused)
    assert any(c.name.startswith(("TCTX", "ICP")) for c in state.destination)
    assert any(c.name.startswith("PCI ") for c in state.destination)


def test_100_ping_pong_reads_both_hops_and_msr_me_comes_back(tmp_path: Path) -> None:
    """The second hop's source was the first hop's held destination; ME, cleared by the first
    load, is set again by the second (post_load_update_msr flips it back): it toggles."""
    first, second = _hops(_build("qemu-10.0"), tmp_path, ("src", "dst", "back"))

    for hop in (first, second):
        assert hop.machine_state is not None, hop.machine_state_unread
        assert {d.field for d in hop.machine_state.differences} == {"MSR"}
        assert hop.machine_state.hold_ms > 0
    me = [[int(d.destination, 16) & ME for d in hop.machine_state.differences] for hop in (first, second)
          if hop.machine_state is not None]
    assert me == [[0, 0], [ME, ME]]
    assert (tmp_path / "machine-dst-back-source.txt").is_file()


def test_a_register_changed_on_the_held_destination_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real: Callable[..., MachineState] = run.capture
    gdb = tmp_path / "dst.gdb"

    def tamper_then_capture(side: QemuProcess, label: str, evidence: Path | None = None) -> MachineState:
        if label.startswith("destination"):
            assert side.monitor.cmd("query-status")["status"] == "paused"
            write_register(side, gdb, thread=1, register=31, value=PATTERN)  # CPU 0's r31
        return real(side, label, evidence)

    monkeypatch.setattr(run, "capture", tamper_then_capture)
    result = _hop(_build("qemu-7.2"), tmp_path)

    state = result.machine_state
    assert state is not None, result.machine_state_unread
    changed = [d for d in state.differences if d.field != "DECR"]
    assert changed == [Difference("CPU 0", "GPR31", state.source["CPU 0"]["GPR31"], PATTERN)]
