"""The parser on synthetic streams: every record kind, every RAM page kind, and the errors."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamgen import BLOCK, StreamWriter, full_stream

from harness.stream.errors import StreamError
from harness.stream.parser import StreamParser, iter_records
from harness.stream.reader import StreamReader
from harness.stream.records import (
    CommandRecord,
    Configuration,
    DeviceState,
    Eof,
    Footer,
    Header,
    HtabData,
    RamData,
    Record,
    SectionHeader,
    SectionKind,
    Undecoded,
    VmDescription,
)
from harness.stream.values import IntArray, NullPtr, StructArray, StructValue


def parse(data: bytes, tmp_path: Path, window: int | None = None) -> list[Record]:
    path = tmp_path / "stream.bin"
    path.write_bytes(data)
    if window is None:
        return list(iter_records(path))
    with path.open("rb") as f:
        return list(StreamParser(StreamReader(f, str(path), window)).records())


def of(records: list[Record], kind: type[Any]) -> list[Any]:
    return [r for r in records if isinstance(r, kind)]


def raises_at(data: bytes, tmp_path: Path) -> StreamError:
    with pytest.raises(StreamError) as info:
        parse(data, tmp_path)
    return info.value


class TestRecords:
    def test_every_record_in_order(self, tmp_path: Path) -> None:
        records = parse(full_stream(), tmp_path)
        kinds = [type(r).__name__ for r in records]
        assert kinds[:5] == ["Header", "Configuration", "SectionHeader", "RamData", "Footer"]
        assert kinds[-3:] == ["Footer", "Eof", "VmDescription"]
        assert of(records, Header)[0].version == 3
        assert of(records, Configuration)[0].info.machine == "pseries-9.9"
        headers = of(records, SectionHeader)
        assert [(h.kind, h.section.section_id) for h in headers] == [
            (SectionKind.START, 2), (SectionKind.START, 3), (SectionKind.PART, 2),
            (SectionKind.PART, 3), (SectionKind.END, 2), (SectionKind.END, 3), (SectionKind.FULL, 4),
        ]
        assert headers[-1].section.instance_id == 0x80000001  # unsigned
        assert len(of(records, Footer)) == 7
        assert of(records, CommandRecord) == [CommandRecord(headers[4].offset - 9, 2, "PING", 4, 77)]
        assert len(of(records, Eof)) == 1
        assert of(records, VmDescription)[0].vmdesc.page_size == 4096

    def test_ram_blocks_and_page_kinds(self, tmp_path: Path) -> None:
        ram = of(parse(full_stream(), tmp_path), RamData)
        assert [b.name for b in ram[0].piece.blocks] == [BLOCK]
        assert ram[0].piece.blocks[0].size == 0x100000
        counts = ram[1].piece.counts
        assert (counts.zero, counts.normal, counts.xbzrle, counts.compressed) == (2, 1, 1, 1)
        assert (counts.filled, counts.multifd_flush, counts.eos) == (1, 1, 1)
        assert ram[2].piece.counts.normal == 1  # CONTINUE across sections: same block
        zero, page, xbzrle, compressed = 8 + 14 + 1, 8 + 4096, 8 + 3 + 3, 8 + 4 + 5
        assert ram[1].end - ram[1].offset == zero + page + xbzrle + compressed + 9 + 8 + 8

    def test_htab_headers_and_chunks(self, tmp_path: Path) -> None:
        htab = [r.piece for r in of(parse(full_stream(), tmp_path), HtabData)]
        assert htab[0].header == 18
        assert (htab[1].chunks, htab[1].valid, htab[1].invalid) == (1, 2, 1)
        assert htab[2].no_hpt

    def test_device_fields_from_vmdesc(self, tmp_path: Path) -> None:
        (dev,) = of(parse(full_stream(), tmp_path), DeviceState)
        s = dev.state
        assert s.vmsd_name == "dev" and s.version == 2
        values = {f.name: f.value for f in s.fields}
        assert values["a"] == 7 and values["neg"] == -2 and values["flag"] is True
        inner = values["inner"]
        assert isinstance(inner, StructValue)
        assert inner.values("x") == [9] and inner.values("y") == [2**63 + 5]
        assert isinstance(values["arr"], IntArray) and values["arr"].tolist() == [1, 2, 3]
        irqs = values["irqs"]
        assert isinstance(irqs, StructArray)
        assert [(i.values("server"), i.values("prio")) for i in irqs.items()] == [([10], [255]), ([11], [5])]
        assert values["buf"] == b"\xde\xad\xbe\xef"
        assert isinstance(values["np"], NullPtr)
        assert values["chk"] == 0x1234
        sub = s.subsection("dev/sub")
        assert sub is not None and sub.version == 2 and sub.state.values("z") == [0x42]
        a = s.find("a")
        assert a is not None and a.offset == dev.offset

    def test_vmdesc_keeps_the_json_text_as_sent(self, tmp_path: Path) -> None:
        data = full_stream()
        (trailer,) = of(parse(data, tmp_path), VmDescription)
        assert trailer.vmdesc.raw == data[trailer.offset + 5 :]

    def test_small_window_gives_the_same_records(self, tmp_path: Path) -> None:
        data = full_stream()
        assert parse(data, tmp_path, window=4096) == parse(data, tmp_path)

    def test_file_object_that_cannot_be_mapped(self, tmp_path: Path) -> None:
        data = full_stream()
        from_pipe = list(iter_records(io.BytesIO(data)))
        assert [type(r) for r in from_pipe] == [type(r) for r in parse(data, tmp_path)]


class TestWithoutVmdesc:
    def test_sections_listed_and_passed_over_with_footers(self, tmp_path: Path) -> None:
        records = parse(full_stream(with_vmdesc=False), tmp_path)
        (skipped,) = of(records, Undecoded)
        assert skipped.section.idstr == "dev" and "no vmdesc" in skipped.reason
        assert skipped.end - skipped.offset == 4 + 2 + 1 + 9 + 6 + 10 + 4 + 1 + 4 + 13 + 1
        assert isinstance(records[-1], Eof)

    def test_sections_passed_over_without_footers(self, tmp_path: Path) -> None:
        w = StreamWriter().raw(full_stream(footers=False, with_vmdesc=False)[8:-1])
        # another device after the undecodable one, and data that looks like a header
        w.full(5, "other", 0, 1).raw(b"\x04\x00\x00\x00\x09\x03ab\x01" + bytes(20)).eof()
        records = parse(bytes(w), tmp_path)
        skipped = of(records, Undecoded)
        assert [s.section.idstr for s in skipped] == ["dev", "other"]
        assert skipped[0].end == of(records, SectionHeader)[-1].offset
        assert skipped[1].end == len(bytes(w)) - 1
        assert not of(records, Footer)

    def test_data_that_looks_like_a_footer_is_passed_over(self, tmp_path: Path) -> None:
        w = StreamWriter().configuration("pseries-9.9").full(4, "dev", 0, 1)
        w.raw(b"\x7e\x00\x00\x00\x04\xff\xff").footer(4).eof()
        (skipped,) = of(parse(bytes(w), tmp_path), Undecoded)
        assert skipped.end - skipped.offset == 7


class TestErrors:
    def test_truncated_ram_names_offset_and_section(self, tmp_path: Path) -> None:
        data = full_stream()
        cut = data.index(b"\xab" * 100) + 50
        err = raises_at(data[:cut], tmp_path)
        assert err.offset == cut
        assert "'ram'" in err.section and "PART" in err.section

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", "stream ends"),
            (b"QEVN\x00\x00\x00\x03", "not a migration stream"),
            (b"QEVM\x00\x00\x00\x02", "pre-0.13"),
            (bytes(StreamWriter().u8(0x55)), "unknown record type 0x55"),
            (bytes(StreamWriter().part(9)), "never started"),
            (bytes(StreamWriter().start(2, "ram", 0, 4).ram_blocks({BLOCK: 4096}).ram_eos().footer(3)),
             "footer for section 3"),
            (bytes(StreamWriter().start(2, "ram", 0, 4).ram_page("nope", 0, "zero")),
             "unknown RAM block"),
            (bytes(StreamWriter().start(2, "ram", 0, 4).ram_page(None, 0, "zero")), "CONTINUE"),
            (bytes(StreamWriter().start(2, "ram", 0, 4).ram_blocks({BLOCK: 4096})
                   .ram_page(BLOCK, 0x1000, "zero")), "outside RAM block"),
            (bytes(StreamWriter().start(2, "ram", 0, 4).ram_flag(0x0A)), "unknown combination"),
            (bytes(StreamWriter().start(2, "ram", 0, 4).ram_flag(0x80)), "RDMA"),
            (bytes(StreamWriter().start(2, "ram", 0, 3)), "version 3"),
            (bytes(StreamWriter().start(3, "spapr/htab", 0, 1).u32(60)), "HPT shift 60"),
            (bytes(StreamWriter().command(99)), "unknown command"),
            (bytes(StreamWriter().command(1, b"x")), "OPEN_RETURN_PATH with length 1"),
            (bytes(StreamWriter().eof().raw(b"junk")), "not a vmdesc"),
        ],
    )
    def test_bad_streams(self, data: bytes, reason: str, tmp_path: Path) -> None:
        err = raises_at(data, tmp_path)
        assert reason in err.reason
        assert 0 <= err.offset <= len(data)

    def test_bad_page_deep_in_a_run_is_found_quickly(self, tmp_path: Path) -> None:
        """One corrupt offset in a long run of zero pages: reported, not rescanned per page."""
        w = StreamWriter().start(2, "ram", 0, 4).ram_blocks({BLOCK: 1 << 30})
        w.ram_page(BLOCK, 0, "zero")
        bad_at = 0
        for page in range(1, 60000):
            if page == 50000:
                bad_at = len(w.buf)
            w.ram_page(None, page << 12 if page != 50000 else 1 << 40, "zero")
        start = time.monotonic()
        err = raises_at(bytes(w), tmp_path)
        assert "outside RAM block" in err.reason and time.monotonic() - start < 5
        assert err.offset == bad_at

    def test_htab_chunk_beyond_the_table(self, tmp_path: Path) -> None:
        w = StreamWriter().start(3, "spapr/htab", 0, 1).u32(18).footer(3)
        w.part(3).u32(0).u32(16383).u16(2).u16(0)
        assert "beyond" in raises_at(bytes(w), tmp_path).reason

    def test_stream_disagreeing_with_its_vmdesc(self, tmp_path: Path) -> None:
        data = full_stream().replace(b"dev/sub", b"dev/sux", 1)  # the stream, not the vmdesc
        err = raises_at(data, tmp_path)
        assert "'dev/sux' where the vmdesc lists 'dev/sub'" in err.reason
        assert "'dev'" in err.section

    def test_invalid_vmdesc_json(self, tmp_path: Path) -> None:
        data = full_stream()
        data = data[:-2] + b"]}"[::-1]
        err = raises_at(data, tmp_path)
        assert err.section == "VMDESCRIPTION" and "invalid vmdesc" in err.reason

    def test_errors_come_as_stream_errors_only(self, tmp_path: Path) -> None:
        def records() -> Iterator[Record]:
            yield from iter_records(tmp_path / "missing.bin")

        with pytest.raises(StreamError, match="cannot open"):
            list(records())
