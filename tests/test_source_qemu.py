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

from harness.builds.compile import SourceRecipe, cached
from harness.builds.debian_source import cached_qemu_source
from harness.builds.debian_suite import DebianSuiteBuild
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


def test_a_source_build_migrates_to_debians_binary_of_its_release(tmp_path: Path) -> None:
    tree = cached_qemu_source("trixie")
    if tree is None:
        pytest.skip("no QEMU source in the cache: `goldmig source trixie` fetches it")
    firmware = DebianSuiteBuild("qemu-10.0", "trixie").provision().root / "usr/share/qemu"
    if cached(SourceRecipe(SOURCE, tree, (), (), firmware)) is None:
        pytest.skip(f"{tree} is not built yet: `goldmig build {SOURCE} --matrix <a matrix declaring "
                    f"it as in this test>` builds it once (minutes)")
    matrix = dataclasses.replace(load_matrix(_matrix(tmp_path, tree, firmware)),
                                 guest=GuestSettings(smp=1, maxcpus=1))
    cell = next(c for c in matrix.cells() if c.src == SOURCE and c.dst == "qemu-10.0")
    record = CellRecord(cell, tmp_path / "evidence")
    verdict = run_judged(cell, matrix, record)

    assert "QEMU 10.0.13, source build" in record.parameters["source build"]
    assert verdict.outcome in ("passed", "known"), verdict.reason  # 10.0's MSR[ME] flip on load
    assert any(c.id == "migration-completes" and c.verdict.value == "passed" for c in record.checks)
