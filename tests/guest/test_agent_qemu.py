"""The golden guest's agent under the host's QEMU (TCG) with two vCPUs: protocol v4 end to end.

One guest boots for most of the module; each test sets the load mode it
needs.  CPU hotplug boots a guest of its own.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.builds.model import Build
from harness.errors import GuestUnresponsive
from harness.guest.agent import Agent
from harness.guest.image import ensure_golden_image
from harness.guest.protocol import THREAD_ROLES, Busy, CpuOnline, Dlpar, LoadMode, Tick, parse_cpu_list
from harness.hosts.local import LocalHost
from harness.hosts.workspace import SharedWorkspace
from harness.qemu.argv import SidePaths, qemu_argv
from harness.qemu.machine import MachineSetup
from harness.qemu.process import QemuProcess

pytestmark = pytest.mark.slow

HOST_QEMU = "/usr/bin/qemu-system-ppc64"
CPUS = (0, 1)
BEAT_S = 10.0  # beats come every 250 ms; TCG on a loaded 2-core host is slower


@contextmanager
def booted(rundir: Path, smp: int, maxcpus: int,
           devices: tuple[str, ...] = ()) -> Iterator[tuple[QemuProcess, Agent]]:
    """The golden guest running, its agent started (hello seen), QEMU killed on exit."""
    if shutil.which(HOST_QEMU) is None:
        pytest.skip(f"{HOST_QEMU} is not installed")
    image = ensure_golden_image()
    setup = MachineSetup(
        machine="pseries-7.2",
        properties=(("cap-cfpc", "broken"), ("cap-sbbc", "broken"), ("cap-ibs", "broken"),
                    ("cap-ccf-assist", "off"), ("x-vof", "on")),
        firmware="vof", accel="tcg", cpu="POWER9", memory_mb=512, smp=smp, maxcpus=maxcpus,
        devices=devices, kernel=image.kernel, initrd=image.initrd, append=image.kernel_cmdline,
    )
    build = Build(name="host", root=Path("/"), binary=HOST_QEMU)
    paths = SidePaths.for_role(rundir, "src")
    workspace = SharedWorkspace(rundir, [image.kernel.parent])
    argv = qemu_argv(build, setup, paths, incoming=False)
    with QemuProcess("src", LocalHost(), build, argv, paths, workspace) as qemu:
        qemu.start()
        qemu.monitor.cmd("cont")
        agent = Agent(qemu.console)
        agent.hello(timeout=60)  # commands only once the agent reads them
        yield qemu, agent
        assert not qemu.console.corrupt_lines


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with booted(tmp_path_factory.mktemp("smp"), len(CPUS), len(CPUS)) as (_, agent):
        yield agent


def test_hello_and_one_cpu_message_per_online_cpu(agent: Agent) -> None:
    hello = agent.hello(timeout=0)
    assert parse_cpu_list(hello.cpus) == CPUS
    deadline = time.monotonic() + 5
    while agent.online_cpus() != CPUS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agent.online_cpus() == CPUS


def test_every_cpu_ticks(agent: Agent) -> None:
    for cpu in CPUS:
        assert agent.beat_after(Tick, 1, BEAT_S, cpu=cpu).cpu == cpu


def test_busy_beats_from_every_cpu_only_while_busy(agent: Agent) -> None:
    agent.tbreset()
    agent.set_load("busy")
    for cpu in CPUS:
        last = agent.latest(Busy, cpu)
        agent.beat_after(Busy, last.n if last else 0, BEAT_S, cpu=cpu)
    stats = agent.tbstats()
    assert [s.cpu for s in stats.cpus] == list(CPUS)
    assert all(s.samples > 0 and s.max_back == 0 for s in stats.cpus), stats

    agent.set_load("idle")
    # The ok comes after the spinners parked: no busy beat after it, ticks go on.
    beats = {cpu: agent.beats(Busy, cpu) for cpu in CPUS}
    ticks = {cpu: agent.latest(Tick, cpu) for cpu in CPUS}
    before = agent.tbstats()
    for cpu in CPUS:
        tick = ticks[cpu]
        agent.beat_after(Tick, tick.n + 4 if tick else 4, BEAT_S, cpu=cpu)
    assert {cpu: agent.beats(Busy, cpu) for cpu in CPUS} == beats
    assert agent.tbstats().cpus == before.cpus


def test_timer_load_wakes_every_cpu(agent: Agent) -> None:
    agent.set_load("timer")
    agent.tbreset()
    time.sleep(1)
    stats = agent.tbstats()
    agent.set_load("idle")
    # 1 ms sleeps for a second; TCG and a busy host make them fewer, never ~0.
    assert all(s.timer_wakeups > 100 for s in stats.cpus), stats
    assert all(s.samples == 0 for s in stats.cpus), "spinners stay parked in timer mode"
    stopped = agent.tbstats()
    time.sleep(0.5)
    assert agent.tbstats().cpus == stopped.cpus


@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_ipi_round_trips_between_both_cpus(agent: Agent, mode: LoadMode) -> None:
    agent.set_load(mode)
    try:
        report = agent.ipi()
    finally:
        agent.set_load("idle")
    assert [(p.from_cpu, p.to_cpu) for p in report.pairs] == [(0, 1), (1, 0)]
    assert all(p.ticks > 0 for p in report.pairs), report


def test_tbwarp_compares_every_cpu_with_the_others_only_while_busy(agent: Agent) -> None:
    with pytest.raises(GuestUnresponsive, match="tbwarp needs load mode busy"):
        agent.tbwarp()
    agent.set_load("busy")
    try:
        warp = agent.tbwarp()
    finally:
        agent.set_load("idle")
    assert [c.cpu for c in warp.cpus] == list(CPUS)
    assert warp.window * 5 == agent.hello(timeout=0).tb_freq  # 200 ms
    assert all(c.cross > 0 and c.max_warp == 0 and c.min_gap <= c.max_gap for c in warp.cpus), warp


def test_threads_ran_on_their_cpus(agent: Agent) -> None:
    probe = agent.probe()
    assert probe.load == "idle"
    assert (probe.cpus_online, probe.cpus_present) == ("0-1", "0-1")
    placed = {(t.role, t.cpu) for t in probe.threads}
    assert placed == {(role, cpu) for role in THREAD_ROLES for cpu in CPUS}
    assert all(t.ran_on == t.cpu for t in probe.threads), probe.threads


def test_hotplugged_cpu_gets_its_threads(tmp_path: Path) -> None:
    with booted(tmp_path, 1, 2) as (qemu, agent):
        assert agent.hello(timeout=0).cpus == "0"
        slots = qemu.monitor.cmd("query-hotpluggable-cpus")
        free = next(s for s in slots if "qom-path" not in s)
        qemu.monitor.cmd("device_add", driver=free["type"], id="cpu1", **free["props"])
        assert qemu.console.wait_for(CpuOnline, lambda m: m.cpu == 1, 30) is not None
        agent.set_load("busy")
        agent.beat_after(Busy, 0, BEAT_S, cpu=1)
        agent.beat_after(Tick, 0, BEAT_S, cpu=1)
        agent.set_load("idle")
        probe = agent.probe()
        assert probe.cpus_online == probe.cpus_present == "0-1"
        assert {(t.cpu, t.ran_on) for t in probe.threads} == {(0, 0), (1, 1)}
        assert [p.ticks > 0 for p in agent.ipi().pairs] == [True, True]


def test_pci_hotplug_on_both_phbs_and_the_devices_read(tmp_path: Path) -> None:
    """The agent does drmgr's part: the plugged device is probed, reads (MSI delivered), and an
    unplug completes in QEMU (DEVICE_DELETED only once the guest isolated the slot) and leaves
    the other device on that PHB's bus alone."""
    devices = ("spapr-pci-host-bridge,index=1,id=phb1", "virtio-rng-pci,bus=pci.0,addr=0x1")
    with booted(tmp_path, 1, 1, devices) as (qemu, agent):
        assert [d.pci for d in agent.rng().devices] == ["0000:00:01.0"]
        slots: set[str] = set()
        for n, (bus, addr, pci) in enumerate((("pci.0", "0x3", "0000:00:03.0"),
                                              ("phb1.0", "0x2", "0001:00:02.0"))):
            qemu.monitor.cmd("device_add", driver="virtio-rng-pci", id=f"rng{n}", bus=bus, addr=addr)
            added = qemu.console.wait_for(Dlpar, lambda m: m.slot not in slots, 30)
            assert added is not None and added.ok and added.action == "add", added
            slots.add(added.slot)
            assert pci in {d.addr for d in agent.probe().pci}
        report = agent.rng()
        virtio = {d.pci: d.virtio for d in report.devices}
        assert set(virtio) == {"0000:00:01.0", "0000:00:03.0", "0001:00:02.0"}
        for read in report.reads:
            assert read.bytes == 256 and len(read.irqs) == 1, report
        assert {v for r in report.reads for v in r.irqs} == set(virtio.values())
        qemu.monitor.cmd("device_del", id="rng0")
        assert qemu.monitor.wait_event(
            lambda e: e["event"] == "DEVICE_DELETED" and e["data"].get("device") == "rng0", 30)
        removed = [d for d in qemu.console.messages() if isinstance(d, Dlpar) and d.action == "remove"]
        assert len(removed) == 1 and removed[0].ok, removed
        assert [d.pci for d in agent.rng().devices] == ["0000:00:01.0", "0001:00:02.0"]



def test_a_device_that_never_answers_is_named_and_the_agent_answers(tmp_path: Path) -> None:
    """A virtio-rng throttled to 1 byte a minute: its read gets nothing, the other's is whole, and
    the reply comes although the kernel's hwrng lock is then held by its fill thread."""
    devices = ("virtio-rng-pci,bus=pci.0,addr=0x1",
               "virtio-rng-pci,bus=pci.0,addr=0x2,max-bytes=1,period=60000")
    with booted(tmp_path, 1, 1, devices) as (_, agent):
        started = time.monotonic()
        report = agent.rng()
        assert time.monotonic() - started < 12
        assert [(r.name, r.bytes == 256) for r in report.reads] == [
            ("virtio_rng.0", True), ("virtio_rng.1", False)], report
        agent.probe()  # still answering
