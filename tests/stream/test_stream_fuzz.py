"""``goldmig bench-fuzz`` itself: well-formed generated streams, marks that point where they say,
inputs that are a function of their number, seeds cut from a stream, and a supervisor that
reports crashes and hangs, outlives a worker killed by a signal, and saves what replays."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import struct
import time
from collections import Counter
from pathlib import Path

import pytest
from streamgen import StreamWriter, device, field, full_stream

from harness.stream.errors import StreamError
from harness.stream.fuzz import campaign, outcome
from harness.stream.fuzz.command import main
from harness.stream.fuzz.gen import random_stream
from harness.stream.fuzz.inputs import Input, Plan, make_input
from harness.stream.fuzz.real import real_seeds
from harness.stream.fuzz.writer import BODY, RAM, RECORD
from harness.stream.summary import summarise

DELIBERATE = {"RAM_SAVE_FLAG_HOOK: RDMA control data cannot be decoded",
              "mapped-ram streams (file: migration) are not supported"}


class TestGenerator:
    def test_generated_streams_are_well_formed(self) -> None:
        outcomes: Counter[str] = Counter()
        for n in range(150):
            try:
                summarise(io.BytesIO(random_stream(random.Random(n), []).data)).to_text()
                outcomes["ok"] += 1
            except StreamError as exc:
                outcomes[exc.reason] += 1
        assert outcomes["ok"] >= 140 and set(outcomes) <= {"ok", *DELIBERATE}, outcomes

    def test_marks_point_where_they_say(self) -> None:
        for n in range(20):
            seed = random_stream(random.Random(n), [])
            data = seed.data
            assert all(data[at] in (0, 1, 2, 3, 4, 6, 7, 8, 0x7E) for at in seed.boundaries[RECORD])
            assert all(data[a] in (1, 2, 3, 4) and (data[b - 5] == 0x7E or b in seed.boundaries[RECORD])
                       for a, b in seed.sections)
            for at in seed.boundaries.get(RAM, ()):
                word = struct.unpack_from(">Q", data, at)[0]
                assert word & 0x3FF & ~0x20 in (0x02, 0x04, 0x08, 0x10, 0x40, 0x80, 0x100, 0x200)
            assert len(seed.boundaries[BODY]) >= 4  # ram and htab: start and end at least
            for at, width in seed.lengths:
                assert at + width <= len(data)
            if seed.vmdesc is not None:
                start, end = seed.vmdesc
                assert end == len(data) and json.loads(data[start:end])["page_size"] > 0


class TestInputs:
    def test_an_input_is_a_function_of_seed_and_number(self) -> None:
        plan = Plan.make(5, 100, [], [])
        assert make_input(plan, 42) == make_input(Plan.make(5, 100, [], []), 42)
        assert make_input(plan, 42).data != make_input(plan, 43).data
        assert make_input(plan, 42).data != make_input(Plan.make(6, 100, [], []), 42).data

    def test_every_origin_is_made(self, tmp_path: Path) -> None:
        path = tmp_path / "s.bin"
        path.write_bytes(full_stream())
        seeds = real_seeds(path).seeds
        plan = Plan.make(1, 300, seeds, [])
        assert {make_input(plan, n).origin for n in range(300)} == {
            "generated", "mutated-generated", "mutated-real"}


class TestRealSeeds:
    def test_seeds_from_a_stream_are_well_formed(self, tmp_path: Path) -> None:
        path = tmp_path / "s.bin"
        path.write_bytes(full_stream())
        found = real_seeds(path)
        assert [s.origin for s in found.seeds] == ["real:s.bin:ram", "real:s.bin:devices0"]
        for seed in found.seeds:
            summary = summarise(io.BytesIO(seed.data))
            assert all(s.decoded for s in summary.sections), seed.origin
        devices = summarise(io.BytesIO(found.seeds[1].data))
        assert [s.idstr for s in devices.sections] == ["dev"]

    def test_large_fields_shrink_with_their_description(self, tmp_path: Path) -> None:
        desc = {"page_size": 4096, "devices": [device("big", [
            field("table", "uint64", 8, array_len=100_000), field("blob", "buffer", 100_000),
            field("inner", "struct", 50_004, struct={"vmsd_name": "inner", "version": 1, "fields": [
                field("n", "uint32", 4), field("data", "buffer", 50_000)]}),
            field("tail", "uint32", 4)])]}
        w = StreamWriter().configuration("pseries-9.9").full(1, "big", 0, 1)
        w.raw(bytes(800_000)).raw(b"\xaa" * 100_000).u32(9).raw(b"\xbb" * 50_000).u32(0x1234)
        path = tmp_path / "big.bin"
        path.write_bytes(bytes(w.footer(1).eof().vmdesc(desc)))
        (seed,) = real_seeds(path).seeds[1:]
        assert len(seed.data) < 16 << 10
        (section,) = summarise(io.BytesIO(seed.data)).sections
        assert section.decoded
        assert [(e.path, e.size, e.count) for e in section.layout] == [
            ("table", 8, 512), ("blob", 4096, 1), ("inner", 4100, 1), ("inner.n", 4, 1),
            ("inner.data", 4096, 1), ("tail", 4, 1)]


class TestCampaign:
    def test_a_short_run_reports_its_figures(self, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["--count", "200", "--no-real", "--out", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "inputs        200 of 200 in" in out and "inputs/s" in out
        assert "outcomes      ok " in out and "crash 0, hang 0" in out and "findings      none" in out
        assert "peak RSS" in out and not list(tmp_path.iterdir())

    def test_two_workers_give_the_same_outcomes(self, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        outcomes = []
        for jobs in ("1", "2"):
            assert main(["--count", "120", "--no-real", "--jobs", jobs, "--out", str(tmp_path)]) == 0
            outcomes.append([line for line in capsys.readouterr().out.splitlines()
                             if line.startswith(("outcomes", "  generated", "  mutated", "refusals"))])
        assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 4

    def test_a_crash_is_saved_once_per_site_and_replays(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        def broken(file: object) -> None:
            raise KeyError("boom")

        monkeypatch.setattr(outcome, "_summarise", broken)  # the worker is forked: it inherits this
        assert main(["--count", "30", "--no-real", "--out", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert "crash 30" in out and "findings      1 site(s)" in out and "30 x KeyError at " in out
        (saved,) = tmp_path.glob("*.bin")
        assert "KeyError: 'boom'" in saved.with_suffix(".txt").read_text()
        assert main(["--replay", str(saved)]) == 1
        assert "crash: KeyError at" in capsys.readouterr().out

    def test_a_worker_killed_by_a_signal_is_a_finding_and_the_run_goes_on(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> None:
        made = campaign.make_input

        def make(plan: Plan, index: int) -> Input:
            data = {3: b"bad", 5: b"bad", 7: b"die"}.get(index)
            return Input(index, data, "generated", "test") if data else made(plan, index)

        def examine(data: bytes, feed: outcome.Feed, limit_s: float) -> outcome.Outcome:
            if data == b"die":
                os.kill(os.getpid(), signal.SIGSEGV)
            if data == b"bad":  # found before the worker dies, and again by its successor
                return outcome.Outcome(outcome.Kind.CRASH, "KeyError at somewhere")
            return outcome.examine(data, feed, limit_s)

        monkeypatch.setattr(campaign, "make_input", make)
        monkeypatch.setattr(campaign, "examine", examine)
        assert main(["--count", "40", "--no-real", "--out", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert "inputs        40 of 40" in out and "crash 3," in out
        assert "1 x worker died (signal SIGSEGV)" in out and "2 x KeyError" in out
        assert (tmp_path / "crash-worker-died-signal-SIGSEGV.bin").read_bytes() == b"die"

    def test_an_input_over_the_time_limit_is_a_hang(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
        def slow(file: object) -> None:
            end = time.monotonic() + 5
            while time.monotonic() < end:  # busy: the limit is in CPU time
                pass

        monkeypatch.setattr(outcome, "_parse", slow)
        assert main(["--count", "2", "--no-real", "--time-limit", "0.2", "--out", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert "hang 2" in out and "2 x hang at " in out and "in slow" in out
