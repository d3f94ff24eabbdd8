"""``pytest suite`` is the suite: the same cells, options and outcomes as ``goldmig run``.

Both run the same two real cells of a small matrix (the shipped builds and known failures, one
machine type, baseline-idle, local hosts); pytest chooses them with ``-k`` and a cell id's
``>``, goldmig with a named selection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.paths import REPO_ROOT

pytestmark = pytest.mark.slow

CHOSEN = ["qemu-7.2>qemu-7.2/pseries-7.2/baseline-idle", "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle"]


def _matrix(tmp_path: Path) -> Path:
    raw: dict[str, Any] = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    raw["hosts"] = "local"
    raw["groups"] = [{"name": "small", "builds": ["qemu-7.2", "qemu-10.0"], "machines": ["pseries-7.2"],
                      "scenarios": ["baseline-idle"]}]
    raw["selections"] = {"all": ["*"], "chosen": CHOSEN}
    raw["default_selection"] = "all"
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _run(argv: list[str], reports: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GOLDMIG_REPORTS=str(reports))
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def _outcomes(reports: Path) -> dict[str, str]:
    return {c["cell"]: c["outcome"] for c in json.loads((reports / "cells.json").read_text())}


def test_pytest_suite_runs_the_cells_goldmig_run_runs_with_the_same_outcomes(tmp_path: Path) -> None:
    matrix = _matrix(tmp_path)
    bin_dir = Path(sys.executable).parent
    allure = tmp_path / "allure"
    by_pytest = _run([str(bin_dir / "pytest"), "suite", "-n", "2", "--matrix", str(matrix),
                      "-k", "qemu-7.2>", "--alluredir", str(allure)], tmp_path / "pytest-reports")
    by_goldmig = _run([str(bin_dir / "goldmig"), "run", "-n", "2", "--matrix", str(matrix),
                       "--select", "chosen"], tmp_path / "goldmig-reports")

    from_pytest = _outcomes(tmp_path / "pytest-reports")
    assert sorted(from_pytest) == sorted(CHOSEN), by_pytest.stdout[-3000:]
    assert from_pytest == _outcomes(tmp_path / "goldmig-reports"), by_goldmig.stdout[-3000:]
    assert by_pytest.returncode == by_goldmig.returncode
    results = [json.loads(p.read_text()) for p in allure.glob("*-result.json")]
    assert sorted(r["name"] for r in results) == sorted(CHOSEN)


def test_goldmig_cells_prints_the_cell_ids(tmp_path: Path) -> None:
    listed = _run([str(Path(sys.executable).parent / "goldmig"), "cells", "--matrix",
                   str(_matrix(tmp_path)), "--select", "chosen"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == CHOSEN
