"""A new site kind is one module plus its registration: the runner (harness/runner/cell.py)
runs a real cell on it without knowing its name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from harness.matrix.load import load_matrix
from harness.matrix.model import GuestSettings
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_judged
from harness.sites import SITES

pytestmark = pytest.mark.slow

CELL = "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle"


@pytest.fixture
def toy_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # registered for this test only; tests/ is on sys.path: tests/toy_site.py
    monkeypatch.setitem(SITES, "toy", "toy_site:ToySite")
    raw = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    raw["hosts"] = "toy"
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_cell_runs_on_a_registered_toy_site(toy_matrix: Path, tmp_path: Path) -> None:
    matrix = dataclasses.replace(load_matrix(toy_matrix), guest=GuestSettings(smp=1, maxcpus=1))
    cell = next(c for c in matrix.cells() if c.id == CELL)
    record = CellRecord(cell, tmp_path / "evidence")
    verdict = run_judged(cell, matrix, record)

    spawned = (record.evidence / "toy-spawns.txt").read_text().splitlines()
    assert spawned == ["qemu-7.2 src-qemu.log", "qemu-10.0 dst-qemu.log"]
    assert record.parameters["hosts"] == "toy (this machine, spawns noted)"
    assert verdict.outcome in ("passed", "known"), verdict.reason  # 7.2 > 10.0's machine-state bugs
    assert [c.id for c in record.checks if c.verdict.value == "passed"], "the cell measured nothing"
    log = (record.evidence / "harness.log").read_text()
    assert "on toy (this machine, spawns noted)" in log and "roles placed: src on local" in log
    assert "goldmig.qmp" in log and "verdict: " in log
    assert "toy" not in (REPO_ROOT / "harness" / "runner" / "cell.py").read_text()


def test_an_unregistered_site_kind_is_refused_naming_the_kinds(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    raw["hosts"] = "toy"
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(Exception, match="'toy' is not one of local, netns, lab"):
        load_matrix(path)
