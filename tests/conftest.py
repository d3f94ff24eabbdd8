"""Fixtures shared by the harness's own tests: a private cache, a golden image in it, and the
run directories of real cells."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import cache, paths
from harness.guest.image import IMAGE_FILES, recipe_key

USER_CACHE = paths.cache_root()  # read at import, before any test points XDG_CACHE_HOME elsewhere


@pytest.fixture
def user_cache() -> Path:
    """The user's own cache (read only: tests copy from it)."""
    return USER_CACHE


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$XDG_CACHE_HOME/goldmig`` in the test's temp dir: tests that damage cached artifacts
    never touch the user's cache, which other runs may be using."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "goldmig"


@pytest.fixture
def golden_image(private_cache: Path) -> Path:
    """The user's golden image for this recipe, copied (not linked) into the private cache and
    sealed as a build would be; skips when the user has none."""
    source = USER_CACHE / "guests" / recipe_key()
    if not all((source / name).is_file() for name in IMAGE_FILES):
        pytest.skip(f"no golden image in {source.parent} to copy (run `goldmig guest`)")
    target = private_cache / "guests" / recipe_key()
    shutil.copytree(source, target)
    cache.seal(target, IMAGE_FILES)
    return target


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
