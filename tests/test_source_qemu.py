"""A real QEMU built from Debian's trixie source package (``kind: source``) runs a real cell
against Debian's own binary of the same release.

The source and its build are cached, never made here (a cold build takes minutes on two
cores): the test is skipped, saying how to make them, when either is missing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from harness.matrix.load import load_matrix
from harness.matrix.model import GuestSettings
from harness.paths import REPO_ROOT
from harness.runner.cell import CellRecord, run_judged

pytestmark = pytest.mark.slow

SOURCE = "qemu-10.0-src"


def _matrix(tmp_path: Path, tree: Path, firmware: Path) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    raw["builds"][SOURCE] = {"kind": "source", "tree": str(tree), "firmware": str(firmware)}
    raw["hosts"] = "local"
    raw["groups"] = [{"name": "source", "builds": [SOURCE, "qemu-10.0"], "machines": ["latest-common"],
                      "scenarios": ["baseline-idle"]}]
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_source_build_migrates_to_debians_binary_of_its_release(
        tmp_path: Path, trixie_source: tuple[Path, Path]) -> None:
    tree, firmware = trixie_source
    matrix = dataclasses.replace(load_matrix(_matrix(tmp_path, tree, firmware)),
                                 guest=GuestSettings(smp=1, maxcpus=1))
    cell = next(c for c in matrix.cells() if c.src == SOURCE and c.dst == "qemu-10.0")
    record = CellRecord(cell, tmp_path / "evidence")
    verdict = run_judged(cell, matrix, record)

    assert "QEMU 10.0.13, source build" in record.parameters["source build"]
    assert verdict.outcome in ("passed", "known"), verdict.reason  # 10.0's MSR[ME] flip on load
    assert any(c.id == "migration-completes" and c.verdict.value == "passed" for c in record.checks)
