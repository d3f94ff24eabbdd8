"""pcihotplug against real QEMU: a plug the source stopped before the guest saw it completes on
the destination, where the device answers; without the device there, the cell fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import MigrationFailed
from harness.matrix.load import load_matrix
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_judged
from harness.scenarios import SCENARIOS
from harness.scenarios.pcihotplug import PciHotplugObservations

pytestmark = pytest.mark.slow

CELL = "qemu-7.2>qemu-10.0/latest-common/pcihotplug-phb1-plug-0ms"
"""Known for the machine state only (10.0's MSR[ME], 7.2's DECR): every other check is measured."""


def _run(tmp_path: Path, cell_id: str = CELL) -> CellRecord:
    matrix = dataclasses.replace(load_matrix(REPO_ROOT / "matrix.yaml"), hosts="local")
    record = CellRecord(next(c for c in matrix.cells() if c.id == cell_id), tmp_path / "evidence")
    run_judged(record.cell, matrix, record)
    return record


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


def test_the_cell_fails_when_the_destination_lacks_the_plugged_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    declared = SCENARIOS["pcihotplug"]
    variants = tuple(dataclasses.replace(v, data=dataclasses.replace(v.data, destination_device=False))
                     if v.name == "phb1-plug-0ms" else v for v in declared.variants)
    monkeypatch.setitem(SCENARIOS, "pcihotplug", dataclasses.replace(declared, variants=variants))

    with pytest.raises(MigrationFailed, match="Unknown savevm section or instance "
                       "'pci@800000020000001:03.0/virtio-rng'"):
        _run(tmp_path)
