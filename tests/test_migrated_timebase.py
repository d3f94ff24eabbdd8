"""The migrated-timebase check: the stream's spapr timebase against the guest's ticks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.checks.migrated_timebase import (
    CpuTicks,
    MigratedTimebase,
    migrated_timebase,
    migrated_timebase_check,
)
from harness.checks.result import CheckResult, Limits, Verdict
from harness.stream.clock import TB_FREQ, rewind_clock

MS = TB_FREQ // 1000
LIMITS = Limits(tb_slack_ms=500)
TICKS = (CpuTicks(0, 1_750 * MS, 2_001 * MS), CpuTicks(1, 1_760 * MS, 2_012 * MS))


def _check(value: int | None, ticks: tuple[CpuTicks, ...] = TICKS) -> CheckResult:
    migrated = MigratedTimebase(value, "" if value is not None else "the stream was not recorded")
    return migrated_timebase_check(((migrated, ticks, 80),), TB_FREQ, LIMITS, "timer-ticks-on-schedule")


def test_a_timebase_between_the_last_and_first_ticks_passes() -> None:
    result = _check(1_800 * MS)
    assert result.ok, result
    assert ("hop 1 CPU 0: last tick on the source 50.0 ms before it, first on the destination "
            "201.0 ms") in str(result.after)


def test_a_timebase_older_than_the_guests_last_reading_fails() -> None:
    result = _check(1_000 * MS)
    assert not result.ok and result.verdict is Verdict.FAILED
    assert "older than the guest's last reading" in str(result.after)


def test_a_first_tick_older_than_it_is_a_buffered_console_not_a_fault() -> None:
    # a tick made on the source and printed on the destination (the hvc driver buffers output)
    assert _check(2_005 * MS, (CpuTicks(0, 1_750 * MS, 2_001 * MS),)).ok


def test_a_destination_that_resumed_far_past_it_fails() -> None:
    ticks = (CpuTicks(0, 1_750 * MS, 3_000 * MS),)
    result = _check(1_760 * MS, ticks)
    assert not result.ok and "did not resume from it" in str(result.after)


def test_a_timebase_older_than_the_last_reading_fails_even_when_the_guest_then_stalls() -> None:
    result = _check(1_000 * MS, (CpuTicks(0, 1_750 * MS, None),))
    assert result.verdict is Verdict.FAILED
    assert "no tick on the destination: the stream's timebase is older" in str(result.after)


def test_without_a_stream_or_a_tick_it_is_not_measured() -> None:
    assert _check(None).verdict is Verdict.NOT_MEASURED
    stalled = _check(1_800 * MS, (CpuTicks(0, 1_750 * MS, None),))
    assert stalled.verdict is Verdict.NOT_MEASURED and stalled.cause == "timer-ticks-on-schedule"


def _a_stream() -> Path:
    streams = sorted(Path.home().glob(".cache/goldmig/streams/**/*.bin"))
    if not streams:
        pytest.skip("no recorded stream in the cache (goldmig run records them)")
    return streams[0]


def test_a_rewound_stream_carries_a_timebase_that_much_older(tmp_path: Path) -> None:
    stream = tmp_path / "stream.bin"
    shutil.copyfile(_a_stream(), stream)
    original = migrated_timebase(stream).value
    if original is None:
        pytest.skip("that stream has no spapr timebase decoded")
    rewind_clock(stream, tmp_path / "rewound.bin", 1_000_000_000)
    assert migrated_timebase(tmp_path / "rewound.bin").value == original - TB_FREQ
