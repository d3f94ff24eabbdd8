"""Run directories carry their owner's pid; a killed run's are swept by the next."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.runner.rundir import make_rundir, sweep_stale_rundirs


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_only_directories_of_dead_owners_are_swept(own_tmp: Path) -> None:
    ours = make_rundir()
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    stale = own_tmp / f"gm-run-{dead}-abc"
    (stale / "sub").mkdir(parents=True)
    unrelated = own_tmp / "gm-run-notapid"
    unrelated.mkdir()

    assert sweep_stale_rundirs() == [stale]
    assert ours.is_dir() and unrelated.is_dir() and not stale.exists()
