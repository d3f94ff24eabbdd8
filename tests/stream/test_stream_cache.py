"""Damaged cached streams and vmstate dumps are found on use and made again.

Each test damages a real cached artifact the way a user did (truncated, one
version byte changed, 1 KiB of guest RAM flipped) and uses it again: the
harness says which file it is remaking, on one line of stderr, and the caller
gets a good stream. Real QEMU (the host's 7.2, TCG) and a private cache
(``XDG_CACHE_HOME`` in the test's temp dir), so the user's cache is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import cache
from harness.qemu.machine import MachineSetup
from harness.stream import corpus, diff, iter_records, summarise
from harness.stream.golden import golden_stream
from harness.stream.recorder import dump_vmstate
from harness.stream.records import RamData, SectionHeader, SectionKind

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/usr/bin/qemu-system-ppc64", os.X_OK),
                       reason="needs the host's QEMU 7.2 (make setup)"),
]


@pytest.fixture(autouse=True)
def _private(private_cache: Path) -> None:
    """Every test here damages cached artifacts: in a private cache."""


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def change_a_version_byte(path: Path) -> None:
    """The low byte of a device section's version_id (what makes QEMU refuse the load)."""
    header = next(r for r in iter_records(path) if isinstance(r, SectionHeader)
                  and r.kind is SectionKind.FULL and r.section.idstr == "spapr")
    # type, section_id, idstr length, idstr, instance_id, version_id (be32; last byte)
    at = header.offset + 1 + 4 + 1 + len(header.section.idstr) + 4 + 3
    _xor(path, at, 1, 0x01)


def flip_1k_of_ram(path: Path) -> None:
    """1 KiB in the middle of the first guest page sent whole (RAM_SAVE_FLAG_PAGE)."""
    _xor(path, first_page(path) + 1024, 1024, 0xFF)


def first_page(path: Path) -> int:
    """Offset of the data of the first whole, non-zero page record of the stream."""
    data = path.read_bytes()
    header = re.compile(rb".{6}[\x00\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0\xe0\xf0][\x08\x28]",
                        re.DOTALL)
    for ram in (r for r in iter_records(path) if isinstance(r, RamData)):
        at = ram.offset
        while (m := header.search(data, at, ram.end)) is not None:
            page = m.end()
            follows = data[page + 4096 + 7: page + 4096 + 8]  # the next record's flags byte
            if follows in (b"\x08", b"\x28", b"\x22", b"\x02", b"\x10") and any(data[page:page + 4096]):
                return page
            at = m.start() + 1
    raise AssertionError(f"no page record in {path}")


DAMAGES = [truncate, change_a_version_byte, flip_1k_of_ram]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_record_stream_remakes_a_damaged_stream(
    damage: Callable[[Path], None], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    stream = corpus.stopped_stream("7.2")
    good = shutil.copyfile(stream.path, tmp_path / "good.bin")
    damage(stream.path)
    damaged = stream.path.read_bytes()
    assert damaged != good.read_bytes()
    capfd.readouterr()

    again = corpus.stopped_stream("7.2")

    assert again.path == stream.path
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(f"goldmig: cache: {stream.path}: ") and line.endswith("; remaking it")
    assert again.path.read_bytes() != damaged
    assert cache.damage(again.path) is None
    # Complete (both parse to the end) and loadable where the good one was (no version moved);
    # two recordings of a stopped machine differ by a few bytes (timebase, page encoding).
    assert diff(good, again.path).breaking == ()


def test_an_intact_stream_is_used_as_is(capfd: pytest.CaptureFixture[str]) -> None:
    first = corpus.stopped_stream("7.2")
    made = first.path.stat().st_mtime_ns
    assert corpus.stopped_stream("7.2").path.stat().st_mtime_ns == made
    assert capfd.readouterr().err == ""


def test_a_damaged_vmstate_dump_is_made_again(private_cache: Path, capfd: pytest.CaptureFixture[str]) -> None:
    build = corpus.reference_build("7.2")
    good = dump_vmstate(build, "pseries-7.2")
    (dump,) = (private_cache / "streams").glob("vmstate-*-pseries-7.2.json")
    dump.write_text(dump.read_text().replace('"version_id": 1', '"version_id": 2', 1))
    capfd.readouterr()

    assert dump_vmstate(build, "pseries-7.2") == good
    assert capfd.readouterr().err.startswith(f"goldmig: cache: {dump}: sha256 ")


def test_golden_stream_copies_a_remade_stream_not_a_damaged_one(
    private_cache: Path, golden_image: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The goldenload path: the golden guest's RAM in the cached stream flipped, the cell's copy good."""
    build, recipe = corpus.recipe("7.2", "xics", guest=corpus.golden_boot(), memory_mb=512)
    setup = MachineSetup(recipe.machine, recipe.properties, "vof", "tcg", recipe.cpu, recipe.memory_mb,
                         1, 1, (), recipe.guest.kernel, recipe.guest.initrd, recipe.guest.append)
    (tmp_path / "run").mkdir()
    golden_stream(build, setup, tmp_path / "run")
    (cached,) = (private_cache / "streams").glob("*.bin")
    flip_1k_of_ram(cached)
    damaged = cached.read_bytes()
    capfd.readouterr()

    copy = golden_stream(build, setup, tmp_path / "run")

    assert capfd.readouterr().err.startswith(f"goldmig: cache: {cached}: sha256 ")
    assert copy.read_bytes() == cached.read_bytes() != damaged
    assert summarise(copy).as_dict()["spapr"]["cas"]["interrupt_controller"] == "XICS"


def _xor(path: Path, offset: int, length: int, mask: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        data = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ mask for b in data))
