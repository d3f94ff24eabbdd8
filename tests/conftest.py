"""Fixtures shared by the harness's own tests: a private cache, a golden image in it, the run
directories of real cells, and how a real cell known only for its machine state is asserted."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import cache, paths
from harness.builds.compile import SourceRecipe, cached
from harness.builds.debian_source import cached_qemu_source
from harness.builds.debian_suite import DebianSuiteBuild
from harness.checks.result import Verdict
from harness.guest.image import IMAGE_FILES, recipe_key
from harness.matrix.load import load_matrix
from harness.matrix.model import KnownFailure
from harness.runner.cell import CellRecord

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


MACHINE_STATE = "machine-state-"
"""The id prefix of the checks of the machine state compared across each hop."""
MACHINE_STATE_ENTRIES = {"machine-state-cpu-*-msr*": "MSR[ME]", "machine-state-cpu-*-decr*": "decrementer"}
"""matrix.yaml's entries for the machine state (the checks they name, what their reason is about):
QEMU 10.0 flips MSR[ME] on load, 7.2 and older do not migrate DECR."""


def known_for_machine_state(record: CellRecord) -> set[str]:
    """Assert that ``record``'s cell is known only because of the machine-state entries: every
    check that failed or was not measured is a failed machine-state check, explained by the
    entry for that register (MSR[ME] on a 10.0 destination, DECR with 7.2 or 5.2). Returns the
    ids of those checks. The test asserts the rest of the checks itself."""
    verdict = record.verdict
    assert verdict is not None, "the cell was not judged"
    assert verdict.outcome == "known", f"{verdict.outcome}: {verdict.reason}"
    against = [v for v in verdict.checks if v.check.counts_against]
    assert against, "a known cell with nothing failed"
    for v in against:
        check, entry = v.check, v.explained_by
        assert check.id.startswith(MACHINE_STATE) and check.verdict is Verdict.FAILED, check.message
        assert entry is not None, f"unexplained: {check.message}"
        assert len(entry.checks) == 1 and entry.checks[0] in MACHINE_STATE_ENTRIES, entry
        assert entry.names(check.id) and MACHINE_STATE_ENTRIES[entry.checks[0]] in entry.reason, entry
    return {v.check.id for v in against}


@pytest.fixture
def machine_state_known() -> Callable[[CellRecord], set[str]]:
    """:func:`known_for_machine_state`, for the test modules that run real cells."""
    return known_for_machine_state


def machine_state_entries(msr: tuple[str, ...] = (), decr: tuple[str, ...] = ()) -> tuple[KnownFailure, ...]:
    """matrix.yaml's two machine-state entries as shipped (checks, match, reason), covering cells
    of a test's own matrix that their globs cannot name: builds the test calls otherwise (a path
    build of the host's 7.2, the lab stand-ins' 10.0). ``msr``: cells with a 10.0 destination;
    ``decr``: cells with 7.2 or 5.2 on either side."""
    shipped = load_matrix(paths.REPO_ROOT / "matrix.yaml").known_failures
    out = []
    for key, cells in (("machine-state-cpu-*-msr*", msr), ("machine-state-cpu-*-decr*", decr)):
        if cells:
            (entry,) = [k for k in shipped if k.checks == (key,)]
            out.append(dataclasses.replace(entry, cells=cells))
    return tuple(out)


@pytest.fixture(name="machine_state_entries")
def _machine_state_entries() -> Callable[..., tuple[KnownFailure, ...]]:
    """:func:`machine_state_entries`, for matrices the tests write themselves."""
    return machine_state_entries


@pytest.fixture
def trixie_source() -> tuple[Path, Path]:
    """Debian's QEMU 10.0.13 source tree (``goldmig source trixie``) and the same release's
    firmware, the tree built once (a cold build takes minutes: never made by a test)."""
    tree = cached_qemu_source("trixie")
    if tree is None:
        pytest.skip("no QEMU source in the cache: `goldmig source trixie` fetches it")
    firmware = DebianSuiteBuild("qemu-10.0", "trixie").provision().root / "usr/share/qemu"
    if cached(SourceRecipe("base", tree, (), (), firmware)) is None:
        pytest.skip(f"{tree} is not built yet: `goldmig patch --tree {tree} --firmware {firmware}` "
                    "builds it once (minutes)")
    return tree, firmware
