"""The phb and xiveblocks scenarios: each passes where QEMU behaves, and its cell fails when the
invariant is broken on purpose (no check is vacuous); their parsers against QEMU's own text."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.checks.generic import Observations, TickGap
from harness.checks.result import Limits, Verdict
from harness.errors import ChecksFailed
from harness.guest.protocol import PciDevice, Probe, Tick
from harness.matrix.load import load_matrix
from harness.matrix.model import Matrix
from harness.migration.run import MigrationFigures, MigrationResult
from harness.paths import REPO_ROOT
from harness.qemu.memmap import Block, Window, phb_windows, ram_blocks, region_types
from harness.runner.cell import CellRecord, run_cell, run_judged
from harness.runner.roles import Hop
from harness.scenarios import SCENARIOS
from harness.scenarios.declare import MachineChange, Variant
from harness.scenarios.measured import Landed
from harness.scenarios.phb import PhbObservations, PhbWindows, assigned_bars, legacy_expected
from harness.scenarios.xiveblocks import XiveBlocksObservations

slow = pytest.mark.slow

# QEMU 7.2, pseries-2.7, info mtree and info ramblock (abridged; the formats of 5.2 and 10.0 match).
def _alias(span: str, phb: str, kind: str, target: str) -> str:
    return f"    {span} (prio 0, i/o): alias {phb}.{kind}-alias @{phb}.{kind.rstrip('0123456789')} {target}"


PHB0 = "pci@800000020000000"
MTREE = "\n".join([
    "address-space: memory",
    "  0000000000000000-ffffffffffffffff (prio 0, i/o): system",
    "    0000000000000000-000000001fffffff (prio 0, ram): ppc_spapr.ram",
    _alias("0000010080000000-000001008000ffff", PHB0, "io", "0000000000000000-000000000000ffff"),
    _alias("00000100a0000000-000001011fffffff", PHB0, "mmio32", "0000000080000000-00000000ffffffff"),
    _alias("0000010120000000-000001101fffffff", PHB0, "mmio64", "0000000100000000-0000000fffffffff"),
    "    0006010000000000-000601003fffffff (prio 0, i/o): xive.esb",
    "address-space: cpu-memory-0",
    "  0000000000000000-ffffffffffffffff (prio 0, i/o): system",
    _alias("00000100a0000000-000001011fffffff", PHB0, "mmio32", "0000000080000000-00000000ffffffff"),
])
RAMBLOCK = """\
              Block Name    PSize              Offset               Used              Total
           ppc_spapr.ram    4 KiB  0x0000000000000000 0x0000000020000000 0x0000000020000000
"""
def test_phb_windows_from_info_mtree_once_each() -> None:
    assert phb_windows(MTREE) == (
        Window(PHB0, "io", 0x10080000000, 0, 0x10000),
        Window(PHB0, "mmio32", 0x100A0000000, 0x80000000, 0x80000000),
        Window(PHB0, "mmio64", 0x10120000000, 0x100000000, 0xF00000000),
    )


def test_pre_2_8_fields_fold_a_contiguous_64_bit_window_into_the_memory_window() -> None:
    """pseries-2.7 sends one 62 GiB window for the split 2 GiB + 60 GiB (spapr_pci_pre_save)."""
    assert legacy_expected(0x800000020000000, phb_windows(MTREE)) == {
        "mig_liobn": 0x80000000, "mig_mem_win_addr": 0x100A0000000, "mig_mem_win_size": 0xF80000000,
        "mig_io_win_addr": 0x10080000000, "mig_io_win_size": 0x10000}


def test_ram_blocks_and_device_regions() -> None:
    assert ram_blocks(RAMBLOCK) == (Block("ppc_spapr.ram", 0x20000000),)
    unnamed = "                            64 KiB  0x0000000020000000 0x0000000000040000 0x0000000000040000"
    assert ram_blocks(RAMBLOCK + unnamed + "\n") == (Block("ppc_spapr.ram", 0x20000000),)
    regions = region_types(MTREE)
    assert regions["xive.esb"] == "i/o" and regions["ppc_spapr.ram"] == "ram"


def test_only_assigned_memory_bars_count() -> None:
    """I/O BARs (kernel port numbers) and BARs VOF left unassigned (IORESOURCE_UNSET) are not
    addresses the windows must cover."""
    dev = PciDevice("0001:00:00.0", "0x1af4", "0x1005", "0x00ff00", (
        "0x0000000000001000-0x000000000000101f 0x0000000000040101",
        "0x0000000000000000-0x0000000000003fff 0x0000000020140204",
        "0x0000220000000000-0x0000220000003fff 0x000000000014220c"))
    probe = _probe_with(pci=(dev,))
    assert assigned_bars(probe) == [("0001:00:00.0", 0x220000000000, 0x220000003FFF)]


def test_xiveblocks_fails_on_a_device_region_sent_as_ram() -> None:
    """An expected block list that is wrong: the stream carries XIVE's ESB as a RAM block."""
    obs = _xive_observations(stream=(Block("ppc_spapr.ram", 0x20000000), Block("xive.esb", 0x40000000)))
    results = {c.invariant: c for c in obs.checks(Limits(500))}
    assert not results["stream's RAM blocks are the destination's"].ok
    assert not results["no device region travels as RAM"].ok
    assert results["no device region travels as RAM"].after == ["xive.esb"]


def test_xiveblocks_fails_on_a_block_of_another_size() -> None:
    obs = _xive_observations(stream=(Block("ppc_spapr.ram", 0x40000000),))
    results = {c.invariant: c for c in obs.checks(Limits(500))}
    assert not results["stream's RAM blocks are the destination's"].ok
    assert results["no device region travels as RAM"].ok


def _probe_with(**changes: object) -> Probe:
    probe = Probe(seq=1, req=1, tb=512_000_000, tb_freq=512_000_000, uptime="5.00", intc="XIVE",
                  intc_names=("XIVE-IRQ",), cpus_online="0", cpus_present="0", mem_total_kb=480000,
                  load="idle", threads=(), pci=(), phb_ranges={})
    return dataclasses.replace(probe, **changes)


def _xive_observations(stream: tuple[Block, ...]) -> XiveBlocksObservations:
    """A healthy migration's own observations, with the stream's block list given; the guest
    stalled and answered nothing after, so its generic checks are not measured."""
    tick = Tick(seq=1, cpu=0, n=5, tb=0)
    figures = MigrationFigures("completed", 300, 20, 1, 0, 0, {})
    gaps = (TickGap(0, tick, None, 1800),)
    seen = Observations("idle", _probe_with(), None, None, 20, "postmigrate", "running", (gaps,), (), None,
                        silence="no reply to 'loadbusy'")
    return XiveBlocksObservations(
        kvm=False, before=_probe_with(), after=_probe_with(), stream_blocks=stream,
        destination_blocks=ram_blocks(RAMBLOCK), source_regions=region_types(MTREE),
        destination_regions=region_types(MTREE),
        landed=Landed(MigrationResult(Hop("src", "dst"), figures, None, 0, 0.3), gaps), seen=seen)


def test_xiveblocks_device_check_needs_the_destinations_xive_regions() -> None:
    """A destination map without XIVE's regions (unread, or another controller) cannot pass."""
    obs = dataclasses.replace(_xive_observations(stream=(Block("ppc_spapr.ram", 0x20000000),)),
                              destination_regions={"ppc_spapr.ram": "ram"})
    results = {c.invariant: c for c in obs.checks(Limits(500))}
    assert results["stream's RAM blocks are the destination's"].ok
    assert not results["no device region travels as RAM"].ok


# ---- real QEMU ----

def _matrix() -> Matrix:
    return dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), hosts="local")


def _record(cell_id: str, tmp_path: Path) -> CellRecord:
    cell = next(c for c in _matrix().cells() if c.id == cell_id)
    return CellRecord(cell, tmp_path / "evidence")


def _run(tmp_path: Path, cell_id: str) -> CellRecord:
    """Run the cell; raises ChecksFailed only when it failed (a known cell returns, judged)."""
    record = _record(cell_id, tmp_path)
    run_judged(record.cell, _matrix(), record)
    return record


def _known_for_machine_state_alone(record: CellRecord, machine_state_known: Callable[..., set[str]]) -> None:
    """A one-CPU 7.2 to 10.0 cell: known for MSR[ME] (10.0 flips it on load) and DECR (7.2 loses
    it) on CPU 0, every other check passed but the IPIs', which one CPU has nothing to measure for."""
    assert machine_state_known(record) == {"machine-state-cpu-0-msr", "machine-state-cpu-0-decr"}
    rest = [c for c in record.checks if not c.id.startswith("machine-state-")]
    assert [(c.invariant, c.verdict) for c in rest if not c.ok] == [
        ("IPIs delivered between every pair of CPUs", Verdict.NOT_APPLICABLE)], rest


def _with_variant(monkeypatch: pytest.MonkeyPatch, scenario: str, variant: Variant[Any]) -> None:
    declared = SCENARIOS[scenario]
    variants = tuple(variant if v.name == variant.name else v for v in declared.variants)
    monkeypatch.setitem(SCENARIOS, scenario, dataclasses.replace(declared, variants=variants))


def _mismatched(name: str, src: PhbWindows, dst: PhbWindows) -> Variant[PhbWindows]:
    return Variant(name, src, source=MachineChange(devices=src.devices(), smp=1, maxcpus=1),
                   destination=MachineChange(devices=dst.devices(), smp=1, maxcpus=1))


PHB_CELL = "qemu-7.2>qemu-10.0/latest-common/phb-windows"  # one CPU: this pair migrates cleanly
PHB_2_7_CELL = "qemu-5.2>qemu-7.2/pseries-2.7/phb-split"


@slow
def test_phb_windows_agree_across_builds(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    record = _run(tmp_path, PHB_CELL)

    assert [c.invariant for c in record.checks[:5]] == [
        "two PHBs with a PCI device each", "guest's PHB windows are the source's",
        "guest's PHB windows are the destination's", "stream's PHB fields agree with the destination",
        "guest's memory BARs lie in their PHB's windows on the destination"]
    _known_for_machine_state_alone(record, machine_state_known)


@slow
def test_phb_cell_fails_when_the_destination_has_other_windows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A destination whose extra PHB has a 32 GiB instead of a 64 GiB 64-bit window: QEMU loads
    the stream (pseries-2.8 and later compare only the buid), the guest keeps ranges that no longer
    hold; the windows check fails the cell, before any timer check."""
    _with_variant(monkeypatch, "phb", _mismatched(
        "windows", PhbWindows(0x40000000, 0x1000000000), PhbWindows(0x40000000, 0x800000000)))

    with pytest.raises(ChecksFailed) as raised:
        _run(tmp_path, PHB_CELL)

    windows = raised.value.named("guest's PHB windows are the destination's")
    assert not windows.ok
    assert "pci@800000020000001 mmio64 cpu 0x220000000000 pci 0x220000000000 size 0x800000000" in str(
        windows.after)


@slow
def test_phb_cell_fails_when_a_device_does_not_answer_on_the_destination(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra PHB's virtio-rng throttled on the destination (1 byte a minute, virtio-rng's own
    rate limit, which is not migrated): the guest's read of it times out and the device traffic
    check fails on that device alone; the default PHB's device, read first, still answers."""
    windows = PhbWindows(0x40000000, 0x1000000000)
    throttled = (windows.devices()[0], windows.devices()[1] + ",max-bytes=1,period=60000")
    _with_variant(monkeypatch, "phb", Variant(
        "windows", windows, source=MachineChange(devices=windows.devices(), smp=1, maxcpus=1),
        destination=MachineChange(devices=throttled, smp=1, maxcpus=1)))

    with pytest.raises(ChecksFailed) as raised:
        _run(tmp_path, PHB_CELL)

    traffic = raised.value.named("virtio devices answer on the destination")
    assert not traffic.ok
    assert "0000:00:00.0: 256 of 256 bytes" in str(traffic.after)
    assert "0001:00:00.0: 256 of 256 bytes" not in str(traffic.after)


@slow
def test_phb_pre_2_8_fields_checked_against_the_destination(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pseries-2.7: a destination whose extra PHB window is 8 GiB instead of 6 GiB. QEMU 7.2 loads
    the stream's pre-2.8 fields without comparing them; the stream check (what QEMU 2.7 compared)
    and the windows check both fail, ahead of 7.2's known lost decrementer."""
    _with_variant(monkeypatch, "phb", _mismatched(
        "split", PhbWindows(0x180000000, 0), PhbWindows(0x200000000, 0)))

    with pytest.raises(ChecksFailed) as raised:
        _run(tmp_path, PHB_2_7_CELL)

    assert not raised.value.named("guest's PHB windows are the destination's").ok
    assert not raised.value.named("stream's PHB fields agree with the destination").ok


@slow
def test_phb_pre_2_8_fields_sent_on_pseries_2_7(tmp_path: Path) -> None:
    """The own checks pass and see the pre-2.8 fields; 7.2's known timer failure ends the cell."""
    record = _record(PHB_2_7_CELL, tmp_path)
    with pytest.raises(ChecksFailed) as raised:
        run_cell(record.cell, _matrix(), record)
    assert not raised.value.named("timer ticks on schedule").ok
    obs = record.observations
    assert isinstance(obs, PhbObservations) and obs.stream is not None
    assert [s.legacy["mig_mem_win_size"] for s in obs.stream] == [0xF80000000, 0x180000000]
    assert all(c.ok for c in record.checks[:5])


XIVE_CELL = "qemu-7.2>qemu-10.0/latest-common/xiveblocks-xive"


@slow
def test_xiveblocks_blocks_agree_and_interrupts_work(
        tmp_path: Path, machine_state_known: Callable[..., set[str]]) -> None:
    record = _run(tmp_path, XIVE_CELL)

    assert [c.invariant for c in record.checks[:4]] == [
        "guest uses XIVE", "stream's RAM blocks are the destination's", "no device region travels as RAM",
        "guest keeps XIVE"]
    _known_for_machine_state_alone(record, machine_state_known)


@slow
def test_xiveblocks_cell_fails_when_the_destination_has_another_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A destination with a VGA (its 16 MiB vram is a RAM block the source never sends): QEMU
    completes the migration; the block check fails the cell."""
    xive = (("ic-mode", "xive"),)
    _with_variant(monkeypatch, "xiveblocks", Variant(
        "xive", False, source=MachineChange(properties=xive, smp=1, maxcpus=1),
        destination=MachineChange(properties=xive, devices=("VGA,romfile=",), smp=1, maxcpus=1)))

    with pytest.raises(ChecksFailed) as raised:
        _run(tmp_path, XIVE_CELL)

    blocks = raised.value.named("stream's RAM blocks are the destination's")
    assert not blocks.ok and "vga.vram" in str(blocks.before)
