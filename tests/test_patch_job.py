"""``goldmig patch`` on Debian's QEMU 10.0.13 source with a patch of our own that stops
restoring CTR on load (tests/data/0001-break-ctr.patch): the job names exactly the cells where
the candidate loads a stream and the checks it breaks, and exits non-zero; with the patch
reverted by a further one (0002), judged against the broken build, the same checks are fixes.

Needs the source and the base's build in the cache (the candidate is one file more: seconds);
skipped, saying how to make them, otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from harness.paths import REPO_ROOT

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
LOADS = ("qemu-10.0>candidate/pseries-10.0/baseline-idle", "candidate>candidate/pseries-10.0/baseline-idle")
CTR = sorted((cell, f"machine-state-cpu-{cpu}-ctr") for cell in LOADS for cpu in (0, 1))


def _job(tmp_path: Path, builds: dict[str, dict[str, object]], *options: str) -> tuple[int, str, Path]:
    """``goldmig patch`` on a matrix of qemu-10.0 (the reference) and ``builds``, baseline-idle on
    pseries-10.0; its exit status, output and reports directory."""
    raw = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    raw["builds"] = {"qemu-10.0": raw["builds"]["qemu-10.0"], **builds}
    raw["groups"] = [{"name": "reference", "builds": ["qemu-10.0"], "machines": ["latest-common"],
                      "scenarios": ["baseline-idle"]}]
    raw["selections"] = {"all": ["*"]}
    raw["default_selection"] = "all"
    raw["hosts"] = "local"
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(raw, sort_keys=False))
    reports = tmp_path / "reports"
    job = subprocess.run(
        [str(Path(sys.executable).parent / "goldmig"), "patch", "--matrix", str(matrix), *options,
         "--scenarios", "baseline-idle", "--machines", "pseries-10.0", "--again", "1", "-n", "2"],
        cwd=REPO_ROOT, env=dict(os.environ, GOLDMIG_REPORTS=str(reports)), capture_output=True,
        text=True, timeout=1800, check=False)
    return job.returncode, job.stdout + job.stderr, reports


def _changed(reports: Path, change: str) -> list[tuple[str, str]]:
    compared = json.loads((reports / "patch.json").read_text())["checks"]
    return sorted((c["cell"], c["check"]) for c in compared if c["change"] == change)


def test_a_patch_that_breaks_ctr_on_load_breaks_exactly_its_cells(
        tmp_path: Path, trixie_source: tuple[Path, Path]) -> None:
    tree, firmware = trixie_source
    code, said, reports = _job(tmp_path, {}, "--tree", str(tree), "--firmware", str(firmware),
                               "--series", str(DATA / "0001-break-ctr.patch"))
    assert code == 1, said[-3000:]
    assert _changed(reports, "breaks") == CTR
    assert "goldmig patch: breaks 4, fixes 0" in said
    failures = [case.get("name") for case in ElementTree.parse(reports / "junit.xml").getroot()
                if case.find("failure") is not None]
    assert sorted(failures) == sorted(check for _, check in CTR)


def test_its_revert_fixes_them_against_the_broken_build(tmp_path: Path,
                                                         trixie_source: tuple[Path, Path]) -> None:
    tree, firmware = trixie_source
    source = {"kind": "source", "tree": str(tree), "firmware": str(firmware)}
    broken = [str(DATA / "0001-break-ctr.patch")]
    code, said, reports = _job(
        tmp_path, {"broken": {**source, "patches": broken},
                   "reverted": {**source, "patches": [*broken, str(DATA / "0002-revert-break-ctr.patch")]}},
        "--base", "broken", "--candidate", "reverted")
    assert code == 0, said[-3000:]
    assert _changed(reports, "fixes") == CTR
    assert "goldmig patch: breaks 0, fixes 4" in said
