"""The timebase scenario's per-hop checks on hand-built observations: each passes on a healthy
hop and fails, naming the CPU, when its invariant is broken or when it has nothing to look at.
The cross-CPU bound cannot be broken in real QEMU under TCG (tests/scenarios/test_timebase.py
says why), so this is where it is shown to fail. Also the agent's tbwarp line. No QEMU here."""

from __future__ import annotations

import dataclasses
import json
import zlib

import pytest

from harness.checks.generic import Observations, TickGap
from harness.checks.result import HOST_OVERLOADED, CheckResult, Limits, Verdict
from harness.checks.timebase import (
    HopTimebase,
    hop_checks,
    in_step,
    jump_within_bound,
    kept_apart,
    never_backwards,
)
from harness.guest.protocol import (
    CpuTbStats,
    CpuWarp,
    Probe,
    ProtocolError,
    TbStats,
    TbWarp,
    ThreadPlacement,
    Tick,
    parse_line,
)
from harness.scenarios.timebase import Plan, TimebaseObservations

FREQ = 512_000_000
MS = FREQ // 1000
LIMITS = Limits(tb_slack_ms=500)


def _stats(*cpus: CpuTbStats) -> TbStats:
    return TbStats(seq=9, req=3, cpus=cpus)


def _cpu(cpu: int, **changes: int) -> CpuTbStats:
    stats = CpuTbStats(cpu=cpu, samples=5000, max_back=0, max_fwd=20 * MS, max_fwd_at=3_000 * MS,
                       last=3_100 * MS, timer_wakeups=0)
    return dataclasses.replace(stats, **changes)


def _warp(*cpus: CpuWarp) -> TbWarp:
    return TbWarp(seq=10, req=4, window=200 * MS, cpus=cpus)


def _side(cpu: int, **changes: int) -> CpuWarp:
    return dataclasses.replace(CpuWarp(cpu=cpu, samples=90_000, cross=80_000, max_warp=0, min_gap=64,
                                       max_gap=2 * MS), **changes)


def _tick(cpu: int, n: int, ms: int) -> Tick:
    return Tick(seq=n, cpu=cpu, n=n, tb=ms * MS)


def _hop(**changes: object) -> HopTimebase:
    hop = HopTimebase(
        number=2, downtime_ms=30,
        gaps=(TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_001), 240),
              TickGap(1, _tick(1, 7, 1_760), _tick(1, 8, 2_012), 250)),
        stats=_stats(_cpu(0), _cpu(1)),
        warp=_warp(_side(0), _side(1)),
    )
    return dataclasses.replace(hop, **changes)


class TestHealthyHop:
    def test_every_check_passes_in_order(self) -> None:
        results = hop_checks(_hop(), FREQ, LIMITS)
        assert [r.invariant for r in results] == [
            "timebase never goes backwards across hop 2",
            "timebase forward jump within bound across hop 2",
            "timebase in step across CPUs after hop 2",
        ]
        assert all(r.ok for r in results), results

    def test_in_step_reports_the_sampling_interval(self) -> None:
        result = in_step(_hop(), FREQ)
        interval = "sampling interval (smallest step between two CPUs' samples) 64 ticks = 0.12 us"
        assert interval in result.evidence
        assert "200 ms" in result.evidence


class TestInStep:
    def test_a_cpu_behind_another_fails_naming_it(self) -> None:
        result = in_step(_hop(warp=_warp(_side(0), _side(1, max_warp=5 * MS))), FREQ)
        assert not result.ok
        assert "CPU 1 behind by 2560000 ticks (5000.0 us)" in result.evidence
        assert result.after == {0: "behind by 0 ticks; 80000 of 90000 samples after another CPU's",
                                1: "behind by 2560000 ticks; 80000 of 90000 samples after another CPU's"}

    def test_one_tick_behind_is_already_a_failure(self) -> None:
        assert not in_step(_hop(warp=_warp(_side(0, max_warp=1), _side(1))), FREQ).ok

    def test_a_sampling_cpu_never_compared_is_not_measured_for_the_host(self) -> None:
        # its vCPU never ran beside another: nothing compared, and no QEMU fault shown
        result = in_step(_hop(warp=_warp(_side(0), _side(1, cross=0, min_gap=0, max_gap=0))), FREQ)
        assert result.verdict is Verdict.NOT_MEASURED and result.cause == HOST_OVERLOADED
        assert "CPUs [1] never sampled right after another CPU" in result.evidence

    def test_a_cpu_never_compared_beside_one_behind_fails(self) -> None:
        never = _side(1, cross=0, min_gap=0, max_gap=0)
        result = in_step(_hop(warp=_warp(_side(0, max_warp=5), never)), FREQ)
        assert result.verdict is Verdict.FAILED
        assert "CPUs [1] never sampled after another CPU" in result.evidence

    def test_only_a_window_with_nothing_compared_and_nothing_behind_is_kept_apart(self) -> None:
        # what the timebase scenario asks again: never a window that showed a CPU behind
        never = _side(1, cross=0, min_gap=0, max_gap=0)
        assert kept_apart(_warp(_side(0), never)) == [1]
        assert kept_apart(_warp(_side(0, max_warp=5), never)) == []
        assert kept_apart(_warp(_side(0), _side(1))) == []
        assert kept_apart(_warp(_side(0, cross=0), _side(1, samples=0, cross=0))) == []

    def test_a_cpu_that_took_no_part_fails(self) -> None:
        silent = _side(1, samples=0, cross=0, min_gap=0, max_gap=0)
        assert not in_step(_hop(warp=_warp(_side(0, cross=0), silent)), FREQ).ok

    def test_one_cpu_has_nothing_to_compare(self) -> None:
        result = in_step(_hop(warp=_warp(_side(0, cross=0, min_gap=0, max_gap=0))), FREQ)
        assert result.verdict is Verdict.NOT_APPLICABLE and not result.ok

    def test_no_answer_is_not_measured(self) -> None:
        result = in_step(_hop(warp=None), FREQ)
        assert result.verdict is Verdict.NOT_MEASURED and not result.ok


class TestNeverBackwards:
    def test_a_backward_step_fails_naming_the_cpu(self) -> None:
        result = never_backwards(_hop(stats=_stats(_cpu(0), _cpu(1, max_back=150 * MS))), FREQ)
        assert not result.ok and "{1: '76800000 ticks (150.0 ms)'}" in str(result.after)

    def test_a_tick_whose_timebase_went_back_fails(self) -> None:
        gaps = (TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 1_700), 240),)
        result = never_backwards(_hop(gaps=gaps), FREQ)
        assert not result.ok and "tick timebase backwards: {0: " in str(result.after)

    def test_a_cpu_without_samples_fails(self) -> None:
        result = never_backwards(_hop(stats=_stats(_cpu(0), _cpu(1, samples=0))), FREQ)
        assert not result.ok and "no samples on CPUs [1]" in result.evidence

    def test_no_answer_is_not_measured(self) -> None:
        assert never_backwards(_hop(stats=None), FREQ).after == "not measured"


class TestJumpWithinBound:
    def test_the_bound_is_the_hops_downtime_plus_slack(self) -> None:
        at_bound = _hop(stats=_stats(_cpu(0, max_fwd=530 * MS), _cpu(1)))
        assert jump_within_bound(at_bound, FREQ, LIMITS).ok
        over = _hop(stats=_stats(_cpu(0, max_fwd=530 * MS + 1), _cpu(1, max_fwd=600 * MS)))
        result = jump_within_bound(over, FREQ, LIMITS)
        assert not result.ok and result.after == "271360001 ticks (530.0 ms)"
        assert result.before == "<= 271360000 ticks (30 ms downtime + 500 ms slack)"

    def test_one_cpu_without_a_sample_past_the_bound_is_a_stall_not_a_jump(self) -> None:
        # measured on 5.2>7.2: CPU 0 did not sample for 709 ms a second after the destination
        # resumed, while CPU 1 sampled throughout with steps of at most 108 ms
        stalled = _hop(stats=_stats(_cpu(0, max_fwd=709 * MS), _cpu(1, max_fwd=108 * MS)))
        result = jump_within_bound(stalled, FREQ, LIMITS)
        assert result.ok and result.after == "55296000 ticks (108.0 ms)"
        assert "CPUs [0] went longer than the bound without a sample" in result.evidence

    def test_one_cpu_counts_its_largest_step(self) -> None:
        assert not jump_within_bound(_hop(stats=_stats(_cpu(0, max_fwd=700 * MS))), FREQ, LIMITS).ok

    def test_a_cpu_without_samples_fails(self) -> None:
        assert not jump_within_bound(_hop(stats=_stats(_cpu(0), _cpu(1, samples=0))), FREQ, LIMITS).ok

    def test_a_jump_the_hosts_wait_accounts_for_is_not_measured_not_failed(self) -> None:
        # measured on 10.2>10.2 timebase hop 3 under --repeat 20: CPU 1's largest step 611.7 ms
        # (CPU 0's 961.3 ms) against 530 ms, while its vCPU threads waited 1636 ms for a host CPU
        stats = _stats(_cpu(0, max_fwd=961 * MS), _cpu(1, max_fwd=611 * MS))
        gaps = tuple(dataclasses.replace(g, starved_ms=1636.0, host="load 5.2 on 2 CPUs")
                     for g in _hop().gaps)
        result = jump_within_bound(_hop(stats=stats, gaps=gaps), FREQ, LIMITS)
        assert result.verdict is Verdict.NOT_MEASURED and result.cause == "host-overloaded"
        assert "over by no more than CPU 1's vCPU threads waited for a host CPU (1636 ms)" in result.evidence
        barely = tuple(dataclasses.replace(g, starved_ms=20.0) for g in _hop().gaps)
        assert not jump_within_bound(_hop(stats=stats, gaps=barely), FREQ, LIMITS).ok, \
            "a wait shorter than the excess does not account for it: the jump fails"


def _seen(hops: tuple[HopTimebase, ...]) -> Observations:
    probe = Probe(seq=1, req=1, tb=1_000 * MS, tb_freq=FREQ, uptime="5.00", intc="XIVE",
                  intc_names=("XIVE-IRQ",), cpus_online="0-1", pci=(), phb_ranges={}, load="busy",
                  cpus_present="0-1", mem_total_kb=480000,
                  threads=(ThreadPlacement("tick", 0, 0), ThreadPlacement("tick", 1, 1)))
    return Observations("busy", probe, probe, _stats(_cpu(0), _cpu(1)), 30, "postmigrate", "running",
                        tuple(h.gaps for h in hops), (), None, silence="no reply to 'ipi'")


def _checks(*hops: HopTimebase) -> list[CheckResult]:
    return TimebaseObservations(FREQ, hops, _seen(hops)).checks(LIMITS)


class TestScenarioOrder:
    def test_every_hops_own_checks_then_every_hops_ticks_then_the_generic_checks(self) -> None:
        hops = tuple(dataclasses.replace(_hop(), number=n) for n in (1, 2, 3))
        names = [r.invariant for r in _checks(*hops)]
        assert names[:9] == [f"timebase {what} hop {n}" for n in (1, 2, 3)
                             for what in ("never goes backwards across", "forward jump within bound across",
                                          "in step across CPUs after")]
        assert names[9:12] == [f"timer ticks on schedule after hop {n}" for n in (1, 2, 3)]
        assert "online CPUs" in names[12:]

    def test_a_hop_whose_cpu_stalled_leaves_its_timebase_not_measured_caused_by_that_hops_ticks(
            self) -> None:
        stalled = (TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_001), 240),
                   TickGap(1, _tick(1, 7, 1_760), None, 1_780))
        hop = dataclasses.replace(_hop(), number=1, gaps=stalled, stats=None, warp=None,
                                  silence="dst: no reply to 'tbwarp'")
        got = {r.invariant: r for r in _checks(hop, dataclasses.replace(_hop(), number=2))}
        ticks = got["timer ticks on schedule after hop 1"]
        assert ticks.verdict is Verdict.FAILED
        backwards = got["timebase never goes backwards across hop 1"]
        assert (backwards.verdict, backwards.cause) == (Verdict.NOT_MEASURED, ticks.id)
        assert "guest answers after hop 1" not in got  # the stall is the finding
        assert got["timebase never goes backwards across hop 2"].ok  # the next hop was made

    def test_a_guest_that_stopped_answering_though_every_cpu_ticked_fails_answering(self) -> None:
        silent = dataclasses.replace(_hop(), number=1, stats=None, warp=None,
                                     silence="dst: no reply to 'tbwarp' (request 4) within 14.0s")
        got = {r.invariant: r for r in _checks(silent)}
        answers = got["guest answers after hop 1"]
        assert not answers.ok and answers.after == "dst: no reply to 'tbwarp' (request 4) within 14.0s"
        assert got["timebase in step across CPUs after hop 1"].cause == answers.id

    @pytest.mark.parametrize(("hops", "rewind_ms"), [(0, 0), (4, 0), (3, 300)])
    def test_a_plan_needs_a_role_for_every_qemu(self, hops: int, rewind_ms: int) -> None:
        with pytest.raises(ValueError, match="roles for 1 to"):
            Plan(hops, rewind_ms)


def _line(kind: str, seq: int, payload: dict[str, object]) -> str:
    body = json.dumps(payload, separators=(",", ":"))
    return f"##GM {kind} {seq} {zlib.crc32(f'{kind} {seq} {body}'.encode()):08x} {body}"


class TestTbWarpLine:
    def test_a_line_captured_from_the_real_agent(self) -> None:
        # Verbatim, 7.2>7.2 hop 1 with -smp 2 on a loaded host (2 TCG vCPUs on 2 busy cores).
        line = ('##GM tbwarp 31 8160a643 {"req":4,"window":102400000,"cpus":[{"cpu":0,"samples":105,'
                '"cross":28,"max_warp":0,"min_gap":18604,"max_gap":2337594},{"cpu":1,"samples":105,'
                '"cross":27,"max_warp":0,"min_gap":20982,"max_gap":550342}]}\r')
        assert parse_line(line) == TbWarp(31, 4, 102400000, (CpuWarp(0, 105, 28, 0, 18604, 2337594),
                                                            CpuWarp(1, 105, 27, 0, 20982, 550342)))

    def test_parses(self) -> None:
        line = _line("tbwarp", 12, {"req": 5, "window": 102400000, "cpus": [
            {"cpu": 0, "samples": 9, "cross": 4, "max_warp": 0, "min_gap": 61, "max_gap": 900},
            {"cpu": 1, "samples": 8, "cross": 4, "max_warp": 3, "min_gap": 70, "max_gap": 800}]})
        assert parse_line(line) == TbWarp(12, 5, 102400000, (CpuWarp(0, 9, 4, 0, 61, 900),
                                                            CpuWarp(1, 8, 4, 3, 70, 800)))

    @pytest.mark.parametrize(("cpus", "message"), [
        ([{"cpu": 0, "samples": 1, "cross": 2, "max_warp": 0, "min_gap": 0, "max_gap": 0}],
         "2 cross samples of 1"),
        ([{"cpu": 0, "samples": 1, "cross": 0, "max_warp": 0, "min_gap": 0}], "lacks 'max_gap'"),
        ([{"cpu": 1, "samples": 1, "cross": 0, "max_warp": 0, "min_gap": 0, "max_gap": 0},
          {"cpu": 0, "samples": 1, "cross": 0, "max_warp": 0, "min_gap": 0, "max_gap": 0}], "ascending"),
    ])
    def test_refuses_what_the_protocol_does_not_allow(self, cpus: list[object], message: str) -> None:
        with pytest.raises(ProtocolError, match=message):
            parse_line(_line("tbwarp", 3, {"req": 1, "window": 5, "cpus": cpus}))
