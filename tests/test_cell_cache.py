"""A goldenload cell whose cached golden stream was damaged loads a good one, as the user's
fault injection asked: a truncated stream used to break the cell naming a temporary copy, a
changed version byte was blamed on QEMU, and flipped guest RAM went unnoticed.

The host's QEMU 7.2 on both sides (TCG), a private cache with a copy of the user's golden image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.errors import GoldmigError, HarnessError, MigrationFailed
from harness.matrix.load import load_matrix
from harness.runner.cell import CellRecord, run_cell

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/usr/bin/qemu-system-ppc64", os.X_OK),
                       reason="needs the host's QEMU 7.2 (make setup)"),
]


def run_goldenload(tmp_path: Path, name: str) -> GoldmigError | None:
    """The qemu-7.2>qemu-7.2 goldenload cell; what it raised (None: it passed)."""
    data = {
        "builds": {"qemu-7.2": {"kind": "host"}},
        "hosts": "local",
        "groups": [{"name": "g", "builds": ["qemu-7.2"], "machines": ["pseries-7.2"],
                    "scenarios": ["goldenload"]}],
        "selections": {"all": ["*"]},
        "default_selection": "all",
    }
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(data))
    matrix = load_matrix(tmp_path / "matrix.yaml")
    (cell,) = matrix.cells()
    try:
        run_cell(cell, matrix, CellRecord(cell, tmp_path / name))
    except GoldmigError as exc:
        return exc
    return None


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def change_the_header_version(path: Path) -> None:
    with path.open("r+b") as f:  # QEVM, be32 version 3 -> 2
        f.seek(7)
        f.write(b"\x02")


@pytest.mark.parametrize("damage", [truncate, change_the_header_version], ids=lambda f: f.__name__)
def test_damaged_golden_stream_is_recorded_again_and_loaded(
    damage: Callable[[Path], None], private_cache: Path, golden_image: Path, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    run_goldenload(tmp_path, "first")  # records the golden stream into the cache
    (stream,) = (private_cache / "streams").glob("*.bin")
    damage(stream)
    capfd.readouterr()

    outcome = run_goldenload(tmp_path, "again")

    assert f"goldmig: cache: {stream}: " in capfd.readouterr().err
    # Not broken (a StreamError naming the run dir's copy), not a load QEMU refused: the
    # destination ran the guest, and only the checks can fail (7.2 destinations have a known
    # timer bug under TCG).
    assert not isinstance(outcome, HarnessError | MigrationFailed), outcome
    assert '"status": "running"' in (tmp_path / "again" / "dst-qmp.log").read_text()
