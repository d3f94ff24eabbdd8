"""The command line (python -m harness.stream), the summary of a synthetic stream, and the
Debian patch filter of the peer-script fetcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamgen import full_stream

from harness.stream.__main__ import main
from harness.stream.peer import _only_files
from harness.stream.summary import summarise


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    path = tmp_path / "s.bin"
    path.write_bytes(full_stream())
    return path


class TestCommandLine:
    def test_summary_text_and_json(self, stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["summary", str(stream)]) == 0
        text = capsys.readouterr().out
        assert "machine pseries-9.9" in text and "0x80000001" in text and "PING x1" in text
        assert main(["summary", "--json", str(stream)]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["ram"]["counts"]["normal"] == 2

    def test_diff_exit_code(self, stream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["diff", str(stream), str(stream)]) == 0
        other = tmp_path / "other.bin"
        other.write_bytes(full_stream().replace(b"pseries-9.9", b"pseries-9.8"))
        assert main(["diff", str(stream), str(other)]) == 1
        assert "machine type" in capsys.readouterr().out

    def test_unreadable_stream(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        bad = tmp_path / "bad.bin"
        bad.write_bytes(full_stream()[:100])
        assert main(["summary", str(bad)]) == 2
        assert "offset 100" in capsys.readouterr().err


def test_summary_of_the_synthetic_stream(stream: Path) -> None:
    s = summarise(stream)
    assert s.machine == "pseries-9.9" and s.has_vmdesc and s.footers
    assert s.ram is not None and s.ram.sections == 3 and s.ram.counts.pages == 6
    assert s.htab is not None and (s.htab.shift, s.htab.valid, s.htab.invalid) == (18, 2, 1)
    (dev,) = [sec for sec in s.sections if sec.idstr == "dev"]
    assert [(e.name, e.version) for e in dev.subsections] == [("dev/sub", 2)]
    assert [(c.path, c.value) for c in dev.checked] == [("chk", 0x1234)]
    assert ("irqs.server", "uint32", 4, 1) in [(e.path, e.type, e.size, e.count) for e in dev.layout]
    assert s.commands == (("PING", 1),)


def test_debian_patch_filter_keeps_only_the_scripts() -> None:
    patch = b"".join([
        b"Description: two files\n",
        b"--- a/hw/ppc/spapr.c\n+++ b/hw/ppc/spapr.c\n@@ -1 +1 @@\n-a\n+b\n",
        b"--- a/scripts/analyze-migration.py\n+++ b/scripts/analyze-migration.py\n",
        b"@@ -1 +1 @@\n-x\n+y\n",
    ])
    kept = _only_files(patch, {"scripts/analyze-migration.py"})
    assert kept == (b"--- a/scripts/analyze-migration.py\n+++ b/scripts/analyze-migration.py\n"
                    b"@@ -1 +1 @@\n-x\n+y\n")
    assert _only_files(patch, {"scripts/vmstate-static-checker.py"}) == b""
