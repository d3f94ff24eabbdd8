"""pcihotplug: the DRC check against the guest's progress (no QEMU), and against real QEMU a plug
the source stopped before the guest saw it completes on the destination, where the device
answers; without the device there, the cell fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.checks.generic import Observations, TickGap
from harness.checks.result import Limits, Verdict
from harness.errors import MigrationFailed
from harness.guest.protocol import Dlpar, Probe, Tick
from harness.matrix.load import load_matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_judged
from harness.scenarios import SCENARIOS
from harness.scenarios.pcihotplug import PHYSICAL_POWERON, PciHotplugObservations, Plan
from harness.scenarios.steps import Before
from harness.stream.drc import Drc

slow = pytest.mark.slow
STOP_TB = 5_000_000
DRC_NAME = "DRC in the stream agrees with the guest's progress"


def _observed(action: str, drcs: tuple[Drc, ...], line: tuple[int, int] | None) -> PciHotplugObservations:
    """A cell's observations with the DRCs the stream carried and the guest's dlpar line (when it
    read the event, when it was done; None: no line), the source stopped at STOP_TB."""
    plan = Plan(action, 1, 0)  # type: ignore[arg-type]
    probe = Probe(seq=1, req=1, tb=1, tb_freq=512_000_000, uptime="5.00", intc="XIVE", intc_names=(),
                  cpus_online="0", cpus_present="0", mem_total_kb=480000, load="idle", threads=(),
                  pci=(), phb_ranges={})
    gaps = (TickGap(0, Tick(seq=1, cpu=0, n=5, tb=0), Tick(seq=9, cpu=0, n=6, tb=1), 250),)
    seen = Observations("idle", probe, probe, None, 20, "postmigrate", "running", (gaps,), (), None)
    handled = () if line is None else (("dst", Dlpar(3, plan.drc, "add" if action == "plug" else "remove",
                                                     "C65560", "", "", *line)),)
    return PciHotplugObservations(plan, Before(probe, "idle", (0,)), True, action == "plug", True, handled,
                                  (), None, 0, drcs, STOP_TB, probe, gaps, seen)


def _drc_check(obs: PciHotplugObservations) -> tuple[bool, object]:
    check = next(c for c in obs.checks(Limits(500)) if c.invariant == DRC_NAME)
    return check.ok, check.after


DRC = Plan("plug", 1, 0).drc


@pytest.mark.parametrize(("action", "drcs", "line", "ok"), [
    # not begun at the stop: the stream must carry the DRC not ready (a plug) or the unplug request
    ("plug", (Drc(DRC, PHYSICAL_POWERON, False),), (STOP_TB + 10, STOP_TB + 20), True),
    ("plug", (), (STOP_TB + 10, STOP_TB + 20), False),  # QEMU lost the pending plug's DRC state
    ("unplug", (Drc(DRC, 8, True),), (STOP_TB + 10, STOP_TB + 20), True),
    ("unplug", (Drc(DRC, 8, False),), (STOP_TB + 10, STOP_TB + 20), False),  # the request lost
    # done on the source: nothing pending may travel
    ("plug", (), (STOP_TB - 20, STOP_TB - 10), True),
    ("plug", (Drc(DRC, PHYSICAL_POWERON, False),), (STOP_TB - 20, STOP_TB - 10), False),
    # in progress at the stop: any state on the way
    ("plug", (Drc(DRC, 7, False),), (STOP_TB - 10, STOP_TB + 10), True),
])
def test_the_drc_in_the_stream_against_the_guests_progress(
        action: str, drcs: tuple[Drc, ...], line: tuple[int, int] | None, ok: bool) -> None:
    assert _drc_check(_observed(action, drcs, line))[0] is ok


def test_without_the_guests_report_the_drc_is_not_judged() -> None:
    """No dlpar line (the guest stalled, or its line was lost): its progress is not known."""
    check = next(c for c in _observed("plug", (Drc(DRC, PHYSICAL_POWERON, False),), None).checks(Limits(500))
                 if c.invariant == DRC_NAME)
    assert (check.verdict, check.cause) == (Verdict.NOT_MEASURED, "guest-handled-the-plug-event")

CELL = "qemu-7.2>qemu-10.0/latest-common/pcihotplug-phb1-plug-0ms"
"""Known for the machine state only (10.0's MSR[ME], 7.2's DECR): every other check is measured."""


def _run(tmp_path: Path, cell_id: str = CELL) -> CellRecord:
    matrix = dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), hosts="local")
    record = CellRecord(next(c for c in matrix.cells() if c.id == cell_id), tmp_path / "evidence")
    run_judged(record.cell, matrix, record)
    return record


@slow
def test_a_plug_the_stop_caught_completes_on_the_destination(tmp_path: Path) -> None:
    record = _run(tmp_path)

    obs = record.observations
    assert isinstance(obs, PciHotplugObservations)
    results = {c.invariant: c for c in record.checks}
    for name in ("plugged device present on both sides", "guest handled the plug event",
                 "guest sees the device on the destination",
                 "DRC in the stream agrees with the guest's progress",
                 "virtio devices answer on the destination"):
        assert results[name].ok, results[name]
    # stopped as device_add returned: the guest had not read the event, QEMU sent the DRC unready
    # and the guest handled the event on the destination
    assert [side for side, _ in obs.handled] == ["dst"]
    assert results["DRC in the stream agrees with the guest's progress"].after == "physical poweron"
    assert "0001:00:03.0: 256 of 256 bytes" in str(results["virtio devices answer on the destination"].after)


@slow
def test_the_cell_fails_when_the_destination_lacks_the_plugged_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    declared = SCENARIOS["pcihotplug"]
    variants = tuple(dataclasses.replace(v, data=dataclasses.replace(v.data, destination_device=False))
                     if v.name == "phb1-plug-0ms" else v for v in declared.variants)
    monkeypatch.setitem(SCENARIOS, "pcihotplug", dataclasses.replace(declared, variants=variants))

    with pytest.raises(MigrationFailed, match="Unknown savevm section or instance "
                       "'pci@800000020000001:03.0/virtio-rng'"):
        _run(tmp_path)
