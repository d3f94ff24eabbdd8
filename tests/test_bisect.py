"""``goldmig bisect`` on a repository made here: Debian's QEMU 10.0.13 source committed once, then
three commits of ours, the second of which stops restoring CTR on load. Bisect must name it.

The repository is kept in the cache so that its builds stay incremental between runs (ccache);
skipped, saying how to make what it needs, when the source or its first build is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.paths import REPO_ROOT, cache_root

pytestmark = pytest.mark.slow

BREAK = Path(__file__).parent / "data" / "0001-break-ctr.patch"
CELL = "qemu-10.0>candidate/pseries-10.0/baseline-idle"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _repository(tree: Path) -> Path:
    """The test repository (made once): the tree, a harmless commit, the break, a harmless one."""
    repo = cache_root() / "test-repos" / "qemu-bisect"
    if (repo / ".git").is_dir():
        return repo
    made = repo.with_name("qemu-bisect.part")
    shutil.rmtree(made, ignore_errors=True)
    shutil.copytree(tree, made, symlinks=True)
    _git(made, "init", "--quiet")
    env = ("-c", "user.name=goldmig", "-c", "user.email=goldmig@example.invalid")
    _git(made, "add", "-A", "--force")  # QEMU's .gitignore leaves out the subprojects the tree ships
    _git(made, *env, "commit", "--quiet", "-m", "QEMU 10.0.13 as Debian ships it")
    (made / "README.rst").write_text((made / "README.rst").read_text() + "\nA harmless line.\n")
    _git(made, *env, "commit", "--quiet", "-am", "README: a harmless line")
    _git(made, "apply", str(BREAK))
    _git(made, *env, "commit", "--quiet", "-am", "target/ppc: do not restore CTR on load")
    (made / "README.rst").write_text((made / "README.rst").read_text() + "\nAnother harmless line.\n")
    _git(made, *env, "commit", "--quiet", "-am", "README: another harmless line")
    made.rename(repo)
    return repo


def test_bisect_names_the_commit_that_breaks_ctr(tmp_path: Path, trixie_source: tuple[Path, Path]) -> None:
    tree, firmware = trixie_source
    repo = _repository(tree)
    raw = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    raw["hosts"] = "local"
    raw["groups"] = [{"name": "bisect", "builds": ["qemu-10.0", "candidate"], "machines": ["pseries-10.0"],
                      "scenarios": ["baseline-idle"]}]
    raw["builds"]["candidate"] = {"kind": "host"}  # replaced by the commit under test
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(raw, sort_keys=False))

    run = subprocess.run(
        [str(Path(sys.executable).parent / "goldmig"), "bisect", CELL, "--tree", str(repo),
         "--good", "HEAD~3", "--bad", "HEAD", "--firmware", str(firmware), "--matrix", str(matrix)],
        cwd=REPO_ROOT, env=dict(os.environ, GOLDMIG_REPORTS=str(tmp_path / "reports")),
        capture_output=True, text=True, timeout=3600, check=False)

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    breaking = _git(repo, "rev-parse", "HEAD~1")
    assert run.stdout.splitlines()[0].startswith(f"goldmig bisect: {breaking} is the first commit at "
                                                 "which machine-state-cpu-0-ctr fails on " + CELL)
    assert "target/ppc: do not restore CTR on load" in run.stdout
    steps = (tmp_path / "reports" / "bisect" / "steps.jsonl").read_text().splitlines()
    assert steps, "each step's verdict is kept"
