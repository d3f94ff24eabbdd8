"""harness.cache: artifacts carry a sha256 in a sidecar, checked on use; damaged ones are remade."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import cache


class Maker:
    """``make`` for ensure_file: writes ``content`` and counts the calls."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.calls = 0

    def __call__(self, part: Path) -> None:
        self.calls += 1
        part.write_bytes(self.content)


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Maker]:
    path, make = tmp_path / "entry.bin", Maker(b"QEVM" + bytes(range(256)) * 64)
    cache.ensure_file(path, make, meta={"recipe": "r1"})
    return path, make


class TestEnsureFile:
    def test_made_once_with_its_sidecar(self, made: tuple[Path, Maker]) -> None:
        path, make = made
        assert cache.ensure_file(path, make) == path
        assert make.calls == 1
        sums = json.loads(cache.sums_path(path).read_text())
        assert cache.sums_path(path).name == "entry.bin.sums.json"
        assert sums["files"] == {".": {"size": len(make.content), "sha256": cache.sha256_file(path)}}
        assert sums["meta"] == {"recipe": "r1"}
        assert sorted(p.name for p in path.parent.iterdir()) == [".locks", "entry.bin", "entry.bin.sums.json"]

    @pytest.mark.parametrize(("damage", "why"), [
        (lambda p: os.truncate(p, 100), r"size 100 bytes, but entry.bin.sums.json records 16388 \(truncated"),
        (lambda p: _flip(p, 7, 1), r"sha256 \w{16}\.\.\., but entry.bin.sums.json records \w{16}\.\.\. "
                                   r"\(its content changed\)"),
        (lambda p: cache.sums_path(p).unlink(), r"entry.bin.sums.json is missing"),
        (lambda p: cache.sums_path(p).write_text("{"), r"entry.bin.sums.json is unreadable"),
        (lambda p: cache.sums_path(p).write_text('{"format": 1, "files": {".": {"size": "x"}}}'),
         r"entry.bin.sums.json is unreadable \(bad entry for '.'\)"),
    ], ids=["truncated", "byte-changed", "no-sidecar", "sidecar-garbage", "sidecar-bad-entry"])
    def test_damage_is_remade_with_a_warning_naming_the_file(
        self, made: tuple[Path, Maker], damage: Callable[[Path], object], why: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path, make = made
        damage(path)
        cache.ensure_file(path, make)
        assert make.calls == 2
        assert path.read_bytes() == make.content
        assert cache.damage(path) is None
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"goldmig: cache: {path}: ") and line.endswith("; remaking it")
        assert re.search(why, line), line

    def test_a_change_behind_a_restored_mtime_is_seen(self, made: tuple[Path, Maker]) -> None:
        """The per-process memo is keyed by ctime too, which touch -r cannot restore."""
        path, _ = made
        assert cache.damage(path) is None  # now remembered as intact
        st = path.stat()
        _flip(path, 1000, 1024)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
        assert "content changed" in (cache.damage(path) or "")

    def test_an_intact_file_is_hashed_once_per_process(
        self, made: tuple[Path, Maker], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path, make = made
        hashed: list[Path] = []
        real = cache.sha256_file
        monkeypatch.setattr(cache, "sha256_file", lambda p: hashed.append(p) or real(p))
        for _ in range(3):
            cache.ensure_file(path, make)
        assert hashed == [path]

    def test_failed_remake_is_tried_again_on_next_use(
        self, made: tuple[Path, Maker], capsys: pytest.CaptureFixture[str]
    ) -> None:
        path, make = made
        os.truncate(path, 10)

        def broken(part: Path) -> None:
            part.write_bytes(b"half")
            raise RuntimeError("QEMU died")

        with pytest.raises(RuntimeError):
            cache.ensure_file(path, broken)
        assert not path.with_name(".entry.bin.part").exists()
        cache.ensure_file(path, make)
        assert path.read_bytes() == make.content
        assert len(capsys.readouterr().err.splitlines()) == 2, "each use said it was remaking it"

    def test_a_reader_of_the_damaged_file_keeps_it(self, made: tuple[Path, Maker]) -> None:
        """The remade file replaces the old one in one rename: nothing is unlinked under a reader."""
        path, make = made
        os.truncate(path, 10)
        with path.open("rb") as reader:
            cache.ensure_file(path, make)
            assert reader.read() == make.content[:10]
        assert path.read_bytes() == make.content


class TestEnsureDir:
    def test_made_once_then_remade_when_a_file_changes(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        made: list[Path] = []

        def make(into: Path) -> None:
            made.append(into)
            into.mkdir(exist_ok=True)
            (into / "script.py").write_text("print('peer')\n")
            (into / "notes.txt").write_text(f"not hashed {len(made)}\n")

        scripts = tmp_path / "peer" / "qemu-trixie"
        for _ in range(2):
            assert cache.ensure_dir(scripts, ["script.py"], make) == scripts
        (scripts / "notes.txt").write_text("changed, but nobody relies on it\n")
        cache.ensure_dir(scripts, ["script.py"], make)
        assert len(made) == 1
        (scripts / "script.py").write_text("print('PEER')\n")
        cache.ensure_dir(scripts, ["script.py"], make)
        assert len(made) == 2 and (scripts / "script.py").read_text() == "print('peer')\n"
        assert capsys.readouterr().err.startswith(f"goldmig: cache: {scripts}: script.py: sha256 ")

    def test_peer_scripts_are_fetched_again_when_damaged(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from harness.stream import peer

        def fetch(suite: str, mirror: str, root: Path) -> None:
            root.mkdir(parents=True, exist_ok=True)
            for rel in peer.SCRIPTS.values():
                (root / Path(rel).name).write_text(f"# {rel} from Debian\n")
            (root / "peer.json").write_text(json.dumps({"suite": suite, "version": "1:10.0.13"}))

        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        monkeypatch.setattr(peer, "_fetch", fetch)
        scripts = peer.ensure_peer_scripts()
        scripts.analyze.write_text("# edited\n")
        assert peer.ensure_peer_scripts() == scripts
        assert scripts.analyze.read_text() == "# scripts/analyze-migration.py from Debian\n"
        assert f"goldmig: cache: {scripts.analyze.parent}: analyze-migration.py: " in capsys.readouterr().err


class TestDirectory:
    def test_seal_then_damage_names_the_file(self, tmp_path: Path) -> None:
        root = tmp_path / "root"
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/qemu").write_bytes(b"\x7fELF" * 100)
        (root / "status").write_text("Package: qemu\n")
        cache.seal(root, ["usr/bin/qemu", "status"], meta={"suite": "x"})
        assert cache.damage(root) is None
        _flip(root / "usr/bin/qemu", 10, 1)
        assert (cache.damage(root) or "").startswith("usr/bin/qemu: sha256 ")
        (root / "usr/bin/qemu").unlink()
        assert cache.damage(root) == "usr/bin/qemu: cannot read it (No such file or directory)"


def _flip(path: Path, offset: int, length: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        data = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))
