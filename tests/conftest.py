"""Fixtures shared by the tests that run real cells."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def cell_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Cells make their run dirs here, so leftovers of *this* test can be found: afterwards no
    QEMU mentions it and it is empty."""
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(runs))
    yield runs
    assert _mentioning(str(runs)) == [], "a QEMU of this cell is still running"
    assert list(runs.iterdir()) == [], "the cell left its run directory behind"


@pytest.fixture
def processes_mentioning() -> Callable[[str], list[int]]:
    """Pids whose command line contains a text (to find a cell's QEMU from outside)."""
    return _mentioning


def _mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found
