"""diff(): what differs between two streams, what breaks first; on synthetic and real streams."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from streamgen import StreamWriter, device, field

from harness.stream.diff import Direction, Impact, diff
from harness.stream.recorder import RecordedStream

Maker = Callable[..., RecordedStream]


def stream(tmp_path: Path, name: str, *, machine: str = "pseries-9.9", version: int = 1,
           value: int = 5, extra_field: bool = False, sub: bool = False, le: int = 3) -> Path:
    """One device 'dev' with a checked field ('n', uint32 equal) and a limit ('lim', int32 le)."""
    fields = [field("n", "uint32 equal", 4), field("lim", "int32 le", 4)]
    w = StreamWriter().configuration(machine).full(1, "dev", 0, version).u32(value).u32(le)
    if extra_field:
        fields.append(field("new", "uint8", 1))
        w.u8(1)
    subs = None
    if sub:
        subs = [{"vmsd_name": "dev/extra", "version": 1, "fields": [field("e", "uint8", 1)]}]
        w.subsection("dev/extra", 1).u8(0)
    w.footer(1).eof().vmdesc({"page_size": 4096,
                              "devices": [device("dev", fields, version=version, subsections=subs)]})
    path = tmp_path / name
    path.write_bytes(bytes(w))
    return path


def whats(findings: object) -> list[tuple[str, str, str]]:
    return [(f.impact.label, f.direction.value, f.what) for f in findings]  # type: ignore[attr-defined]


class TestSynthetic:
    def test_identical_streams(self, tmp_path: Path) -> None:
        a = stream(tmp_path, "a")
        result = diff(a, a)
        assert result.findings == () and "no structural differences" in result.to_text()

    def test_checked_value_breaks_both_ways(self, tmp_path: Path) -> None:
        result = diff(stream(tmp_path, "a"), stream(tmp_path, "b", value=6))
        assert whats(result.findings) == [("breaks", "both", "checked field (uint32 equal)")]
        assert "n: 5 vs 6" in result.findings[0].detail

    def test_le_value_breaks_towards_the_smaller(self, tmp_path: Path) -> None:
        result = diff(stream(tmp_path, "a", le=4), stream(tmp_path, "b", le=3))
        assert whats(result.findings) == [("breaks", "a->b", "checked field (int32 le)")]
        assert result.breaks(Direction.A_TO_B) and not result.breaks(Direction.B_TO_A)

    def test_newer_version_breaks_backwards_and_may_break_forwards(self, tmp_path: Path) -> None:
        result = diff(stream(tmp_path, "a"), stream(tmp_path, "b", version=2, extra_field=True))
        assert whats(result.findings) == [
            ("breaks", "b->a", "section version"),
            ("may break", "a->b", "section version below the destination's"),
            ("changed", "both", "field layout"),
        ]

    def test_layout_change_at_the_same_version_breaks(self, tmp_path: Path) -> None:
        result = diff(stream(tmp_path, "a"), stream(tmp_path, "b", extra_field=True))
        assert whats(result.findings) == [("breaks", "both", "field layout differs at the same version")]
        assert "+new" in result.findings[0].detail

    def test_subsection_and_machine(self, tmp_path: Path) -> None:
        result = diff(stream(tmp_path, "a", sub=True), stream(tmp_path, "b", machine="pseries-9.8"))
        assert whats(result.findings) == [
            ("breaks", "both", "machine type"),
            ("may break", "a->b", "subsection only in a"),
        ]
        assert [f.impact for f in result.findings] == sorted(f.impact for f in result.findings)

    def test_json(self, tmp_path: Path) -> None:
        data = json.loads(diff(stream(tmp_path, "a"), stream(tmp_path, "b", value=1)).to_json())
        assert data["findings"][0]["impact"] == "breaks"
        assert data["findings"][0]["direction"] == "both"


@pytest.mark.slow
class TestReal:
    def test_10_0_to_7_2_breaks_on_cpu_slb(self, running: Maker) -> None:
        """The known failure of matrix.yaml (10.0 > 7.2 refused: cpu/slb v2), found from streams."""
        old = running("7.2", "xics", machine="pseries-7.2", memory_mb=256).path
        new = running("10.0", "dual", machine="pseries-7.2", memory_mb=256).path
        result = diff(old, new)
        first = result.findings[0]
        assert (first.impact, first.direction, first.where) == (Impact.BREAKS, Direction.B_TO_A, "cpu 0x0")
        assert "cpu/slb: 1 vs 2" in first.detail
        assert result.breaks(Direction.B_TO_A)
        cpu = [f for f in result.findings if f.where == "cpu 0x0" and f.impact is Impact.CHANGED]
        assert cpu and "retired" in cpu[0].what  # env.reserve_addr became unused: same bytes

    def test_interrupt_controllers(self, stopped: Maker) -> None:
        result = diff(stopped("7.2", "xics").path, stopped("7.2", "xive").path)
        only_a = {f.where for f in result.findings if f.what == "section only in a"}
        only_b = {f.where for f in result.findings if f.what == "section only in b"}
        assert only_a == {"ics 0x0", "icp/server 0x0"}
        assert only_b == {"xive-source 0x0", "spapr-xive 0x0", "xive-tctx 0x0"}

    def test_a_stream_against_itself(self, stopped: Maker) -> None:
        path = stopped("10.0", "xive").path
        assert diff(path, path).findings == ()
