"""Fixtures shared by the harness's own tests: a private cache, and a golden image in it."""

from __future__ import annotations

import shutil
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
