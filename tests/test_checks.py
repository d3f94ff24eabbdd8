"""The generic checks on hand-built observations: each passes on a healthy migration, fails,
naming the CPU, when its invariant is broken, and is not measured or not applicable (never
passed) when it has nothing to look at. No QEMU here."""

from __future__ import annotations

import dataclasses

import pytest

from harness.checks.devices import DeviceTraffic
from harness.checks.generic import (
    GENERIC,
    STALL,
    Observations,
    Progress,
    TickGap,
    generic_checks,
    ipis_delivered,
    missed_tick,
)
from harness.checks.migrated_timebase import MigratedTimebase
from harness.checks.result import HOST_OVERLOADED, CheckResult, Limits, Verdict
from harness.errors import ConfigError
from harness.guest.protocol import (
    CpuTbStats,
    IpiPair,
    IpiReport,
    Probe,
    RngRead,
    RngReport,
    TbStats,
    ThreadPlacement,
    Tick,
    VirtioDevice,
)
from harness.scenarios.hotplug import HotplugObservations, Plan
from harness.scenarios.steps import Before

FREQ = 512_000_000
MS = FREQ // 1000
LIMITS = Limits(tb_slack_ms=500)


def _probe(tb: int, **changes: object) -> Probe:
    probe = Probe(
        seq=1, req=1, tb=tb, tb_freq=FREQ, uptime="5.00", intc="XIVE", intc_names=("XIVE-IRQ",),
        cpus_online="0-1", pci=(), phb_ranges={"pci@800000020000000": "00"}, load="idle",
        cpus_present="0-1", mem_total_kb=480000,
        threads=(ThreadPlacement("tick", 0, 0), ThreadPlacement("tick", 1, 1)),
    )
    return dataclasses.replace(probe, **changes)


def _tick(cpu: int, n: int, ms: int) -> Tick:
    return Tick(seq=n, cpu=cpu, n=n, tb=ms * MS)


def _healthy(**changes: object) -> Observations:
    obs = Observations(
        load="idle",
        probe_before=_probe(1_000 * MS),
        probe_after=_probe(3_000 * MS),
        timebase=TbStats(seq=9, req=3, cpus=(
            CpuTbStats(cpu=0, samples=5000, max_back=0, max_fwd=2 * MS, max_fwd_at=2_900 * MS,
                       last=3_000 * MS, timer_wakeups=0),
            CpuTbStats(cpu=1, samples=4000, max_back=0, max_fwd=3 * MS, max_fwd_at=2_950 * MS,
                       last=3_000 * MS, timer_wakeups=0),
        )),
        downtime_ms=80,
        source_status="postmigrate",
        destination_status="running",
        hop_gaps=((TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_001), 240),
                   TickGap(1, _tick(1, 7, 1_760), _tick(1, 8, 2_012), 250)),),
        progress=(Progress(0, 4, 6), Progress(1, 4, 7)),
        ipi=IpiReport(seq=10, req=4, pairs=(IpiPair(0, 1, 40_000), IpiPair(1, 0, 41_000))),
        accel="kvm",  # the migrated timebase is applied (and checked) only under KVM
        migrated=(MigratedTimebase(1_800 * MS),),
        hop_downtimes_ms=(80,),
        devices=DeviceTraffic(RNG, RNG, ("0000:00:00.0",)),
    )
    return dataclasses.replace(obs, **changes)


RNG = RngReport(seq=12, req=6, devices=(VirtioDevice("0000:00:00.0", "virtio0"),),
                reads=(RngRead("virtio_rng.0", 256, 2_800, {"virtio0": 2}),))
"""The matrix's virtio-rng read with its interrupts counted, as on a healthy guest."""


def _failed(obs: Observations) -> dict[str, str]:
    return {r.invariant: str(r.after) + " | " + r.evidence for r in obs.checks(LIMITS) if not r.ok}


def _verdicts(obs: Observations) -> dict[str, CheckResult]:
    return {r.invariant: r for r in obs.checks(LIMITS)}


class TestHealthyMigration:
    def test_every_generic_check_passes(self) -> None:
        assert _failed(_healthy()) == {}

    def test_every_check_is_named_and_evaluated(self) -> None:
        assert [r.invariant for r in _healthy().checks(LIMITS)] == list(GENERIC)

    def test_a_scenario_that_does_not_read_the_devices_does_not_list_their_check(self) -> None:
        names = [r.invariant for r in _healthy(devices=None).checks(LIMITS)]
        assert names == [n for n in GENERIC if n != "virtio devices answer on the destination"]

    def test_a_tcg_cell_does_not_list_the_kvm_only_checks(self) -> None:
        names = [r.invariant for r in _healthy(accel="tcg").checks(LIMITS)]
        assert names == [n for n in GENERIC if n != "migrated timebase resumed on the destination"]


class TestTicksOnSchedule:
    def test_a_cpu_without_a_tick_after_resume_fails_naming_it(self) -> None:
        gaps = (TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_001), 240),
                TickGap(1, _tick(1, 7, 1_760), None, 1_830))
        failed = _failed(_healthy(hop_gaps=(gaps,)))
        assert set(failed) == {"timer ticks on schedule", "migrated timebase resumed on the destination"}
        assert "CPU 1: no tick after #7 within 1830 ms" in failed["timer ticks on schedule"]
        assert _verdicts(_healthy(hop_gaps=(gaps,)))["migrated timebase resumed on the destination"].cause \
            == "timer-ticks-on-schedule"

    def test_a_late_tick_fails_even_though_it_came(self) -> None:
        # 830 ms allowed (250 period + 80 downtime + 500 slack); this one took 900 ms.
        gaps = (TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_650), 900),)
        failed = _failed(_healthy(hop_gaps=(gaps,)))
        assert "CPU 0: tick #7 to #8 took 900 ms" in failed["timer ticks on schedule"]

    def test_a_gap_just_within_the_bound_passes(self) -> None:
        gaps = (TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_580), 800),)
        assert "timer ticks on schedule" not in _failed(_healthy(hop_gaps=(gaps,)))

    def test_a_first_tick_on_schedule_without_the_next_one_fails_and_is_a_stall(self) -> None:
        # CPU 0's first tick ended a sleep the source's timer had ended; the destination's never fired
        gaps = (TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_001), 20, timer_resumed=False,
                        next_waited_ms=1_000),
                TickGap(1, _tick(1, 7, 1_760), _tick(1, 8, 2_012), 30, timer_resumed=True))
        failed = _failed(_healthy(hop_gaps=(gaps,)))
        assert "CPU 0: no tick after #8 within 1000 ms of it" in failed["timer ticks on schedule"]
        assert missed_tick(gaps) == [0]



class TestPerCpu:
    def test_one_stalled_cpu_fails_progress(self) -> None:
        failed = _failed(_healthy(progress=(Progress(0, 4, 6), Progress(1, 4, None))))
        assert "stalled: [1]" in failed["CPU progress on every CPU"]

    def test_a_lost_ipi_fails(self) -> None:
        ipi = IpiReport(seq=10, req=4, pairs=(IpiPair(0, 1, 40_000), IpiPair(1, 0, -1)))
        assert "lost: ['1->0']" in _failed(_healthy(ipi=ipi))["IPIs delivered between every pair of CPUs"]

    def test_missing_ipi_pairs_fail(self) -> None:
        ipi = IpiReport(seq=10, req=4, pairs=(IpiPair(0, 1, 40_000),))
        assert "IPIs delivered between every pair of CPUs" in _failed(_healthy(ipi=ipi))

    def test_a_backward_step_on_one_cpu_fails(self) -> None:
        stats = _healthy().timebase
        cpus = (stats.cpus[0], dataclasses.replace(stats.cpus[1], max_back=12))
        failed = _failed(_healthy(timebase=dataclasses.replace(stats, cpus=cpus)))
        assert "{1: 12}" in failed["timebase never goes backwards"]

    def test_a_forward_jump_past_the_bound_fails(self) -> None:
        stats = _healthy().timebase
        cpus = tuple(dataclasses.replace(c, max_fwd=700 * MS) for c in stats.cpus)
        failed = _failed(_healthy(load="busy", timebase=dataclasses.replace(stats, cpus=cpus)))
        assert set(failed) == {"timebase forward jump within bound"}

    def test_one_cpu_not_sampling_past_the_bound_is_not_a_jump(self) -> None:
        # the other CPU sampled throughout with small steps: the timebase did not jump (a CPU
        # whose spinner did not run is the progress and tick checks' business)
        stats = _healthy().timebase
        cpus = (dataclasses.replace(stats.cpus[0], max_fwd=700 * MS), stats.cpus[1])
        assert "timebase forward jump within bound" not in _failed(
            _healthy(load="busy", timebase=dataclasses.replace(stats, cpus=cpus)))

    def test_a_thread_off_its_cpu_fails(self) -> None:
        probe = _probe(3_000 * MS, threads=(ThreadPlacement("tick", 0, 0), ThreadPlacement("tick", 1, 0)))
        assert "tick1 ran on 0" in _failed(_healthy(probe_after=probe))["agent threads run on their CPUs"]

    def test_a_cpu_gone_offline_fails(self) -> None:
        failed = _failed(_healthy(probe_after=_probe(3_000 * MS, cpus_online="0")))
        assert "online CPUs" in failed


class TestComposition:
    def test_leaving_out_a_check_by_name(self) -> None:
        names = [r.invariant for r in generic_checks(_healthy(), LIMITS, without={"source is postmigrate"})]
        assert "source is postmigrate" not in names and "destination is running" in names

    def test_a_misspelt_check_name_is_an_error_not_a_silent_drop(self) -> None:
        with pytest.raises(ConfigError, match="no such generic check"):
            generic_checks(_healthy(), LIMITS, without={"source is post-migrate"})



_STALLED = ((TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_001), 240),
             TickGap(1, _tick(1, 7, 1_760), None, 1_830)),)


class TestNothingMeasuredIsNeverAPass:
    """Each check kind with nothing to look at: not measured (with its cause) or not applicable."""

    def test_a_silent_guest_after_a_stall_leaves_its_checks_not_measured_caused_by_the_stall(
            self) -> None:
        obs = _healthy(hop_gaps=_STALLED, probe_after=None, timebase=None, ipi=None, progress=(),
                       silence="dst: no reply to 'loadbusy' (request 9) within 3.0s")
        got = _verdicts(obs)
        assert got["timer ticks on schedule"].verdict is Verdict.FAILED
        for name in ("CPU progress on every CPU", "IPIs delivered between every pair of CPUs",
                     "timebase advanced across migration", "online CPUs", "PCI devices and BARs",
                     "agent threads run on their CPUs", "guest answers after the migration"):
            assert (got[name].verdict, got[name].cause) == (Verdict.NOT_MEASURED, STALL), name
            assert not got[name].ok
        assert "loadbusy" in got["online CPUs"].evidence

    def test_a_silent_guest_without_a_stall_fails_answering_and_the_rest_are_caused_by_it(
            self) -> None:
        got = _verdicts(_healthy(probe_after=None, ipi=None, silence="no reply to 'probe'"))
        assert got["guest answers after the migration"].verdict is Verdict.FAILED
        assert got["online CPUs"].cause == "guest-answers-after-the-migration"

    def test_ipis_with_one_cpu_are_not_applicable(self) -> None:
        one = _healthy(probe_before=_probe(1_000 * MS, cpus_online="0"),
                       ipi=IpiReport(seq=10, req=4, pairs=()))
        result = _verdicts(one)["IPIs delivered between every pair of CPUs"]
        assert result.verdict is Verdict.NOT_APPLICABLE and not result.ok

    def test_timebase_backwards_with_no_crossing_tick_and_no_samples_is_not_measured(self) -> None:
        idle = dataclasses.replace(_healthy().timebase, cpus=tuple(
            dataclasses.replace(c, samples=0) for c in _healthy().timebase.cpus))
        gaps = tuple((dataclasses.replace(g, first_after=None),) for g in _STALLED[0])
        result = _verdicts(_healthy(timebase=idle, hop_gaps=gaps))["timebase never goes backwards"]
        assert (result.verdict, result.cause) == (Verdict.NOT_MEASURED, STALL)

    def test_no_ticks_on_the_source_is_not_measured(self) -> None:
        result = _verdicts(_healthy(hop_gaps=((),)))["timer ticks on schedule"]
        assert result.verdict is Verdict.NOT_MEASURED

    def test_missed_tick_names_the_cpus_without_a_first_tick(self) -> None:
        assert missed_tick(_STALLED[0]) == [1] and missed_tick(_healthy().hop_gaps[0]) == []


IPIS = "IPIs delivered between every pair of CPUs"


def _plugged(seen: Observations, agent_cpus: tuple[int, ...] = (0, 1)) -> HotplugObservations:
    """A guest booted with CPU 0 only, CPU 1 plugged and ticking on the destination."""
    return HotplugObservations(
        Plan("plug", 0), Before(seen.probe_before, "idle", (0,)), 1, "destination", False, True, True,
        True, None, (), None, 3, (), seen.probe_after, "", agent_cpus, seen.hop_gaps[0], 80, seen)


class TestHotplugIpis:
    """hotplug's IPI check goes through the generic one, counting the agent's CPUs (the plugged
    one included) instead of those online before the migration; its results are the ones it gave
    when it had its own call (pinned here field by field)."""

    ONE_CPU = _healthy(probe_before=_probe(1_000 * MS, cpus_online="0"))

    def test_the_plugged_cpu_counts(self) -> None:
        assert _verdicts(self.ONE_CPU)[IPIS].verdict is Verdict.NOT_APPLICABLE  # generic: 1 CPU
        assert _plugged(self.ONE_CPU)._ipis() == CheckResult(
            IPIS, True, "2 pairs answered", {"0->1": 40_000, "1->0": 41_000},
            "cross-CPU futex wake-up round trips in timebase ticks; lost: none")

    def test_an_ipi_lost_to_the_plugged_cpu_fails(self) -> None:
        ipi = IpiReport(seq=10, req=4, pairs=(IpiPair(0, 1, 40_000), IpiPair(1, 0, -1)))
        assert _plugged(dataclasses.replace(self.ONE_CPU, ipi=ipi))._ipis() == CheckResult(
            IPIS, False, "2 pairs answered", {"0->1": 40_000, "1->0": -1},
            "cross-CPU futex wake-up round trips in timebase ticks; lost: ['1->0']", Verdict.FAILED)

    def test_unanswered_after_a_stall_is_not_measured_caused_by_it(self) -> None:
        seen = dataclasses.replace(self.ONE_CPU, ipi=None, hop_gaps=_STALLED,
                                   silence="dst: no reply to 'ipi'")
        assert _plugged(seen)._ipis() == CheckResult(
            IPIS, False, "2 pairs answered", "not measured", "the guest did not answer ipi: dst: no "
            "reply to 'ipi'", Verdict.NOT_MEASURED, STALL)

    def test_unanswered_without_a_stall_is_caused_by_the_silence(self) -> None:
        seen = dataclasses.replace(self.ONE_CPU, ipi=None, silence="dst: no reply to 'ipi'")
        assert _plugged(seen)._ipis().cause == "guest-answers-after-the-migration"

    def test_one_agent_cpu_is_not_applicable(self) -> None:
        result = _plugged(self.ONE_CPU, agent_cpus=(0,))._ipis()
        assert (result.verdict, result.evidence) == (
            Verdict.NOT_APPLICABLE, "1 CPU online: no pair of CPUs to send IPIs between")

    def test_it_is_the_generic_check_with_the_agents_cpu_count(self) -> None:
        seen = _healthy(woken="CPUs [1] missed their tick")
        assert _plugged(seen)._ipis() == ipis_delivered(seen, 2) == _verdicts(seen)[IPIS]


class TestJumpInEveryGuestState:
    def test_an_idle_guest_measures_the_jump_from_its_ticks_stamps(self) -> None:
        result = _verdicts(_healthy(load="idle"))["timebase forward jump within bound"]
        # CPU 0 ticked 251 ms apart, CPU 1 252 ms: the jump is at most 1 ms
        assert result.ok and result.after == f"hop 1: {MS} ticks (1.0 ms)"

    def test_an_idle_guest_whose_ticks_jumped_fails(self) -> None:
        gaps = ((TickGap(0, _tick(0, 7, 1_750), _tick(0, 8, 2_700), 950),
                 TickGap(1, _tick(1, 7, 1_760), _tick(1, 8, 2_712), 950)),)
        result = _verdicts(_healthy(hop_gaps=gaps))["timebase forward jump within bound"]
        assert not result.ok and "hop 1: " in str(result.after)

    def test_every_hop_is_measured(self) -> None:
        hop = _healthy().hop_gaps[0]
        result = _verdicts(_healthy(hop_gaps=(hop, hop)))["timebase forward jump within bound"]
        assert result.ok and "hop 2: " in str(result.after)

    def test_a_hop_no_cpu_ticked_across_is_not_measured(self) -> None:
        result = _verdicts(_healthy(hop_gaps=(_healthy().hop_gaps[0], (
            TickGap(0, _tick(0, 9, 3_000), None, 1_800),))))["timebase forward jump within bound"]
        assert result.verdict is Verdict.NOT_MEASURED and "[2]" in result.evidence

    def test_a_busy_guest_uses_the_watchers(self) -> None:
        result = _verdicts(_healthy(load="busy"))["timebase forward jump within bound"]
        assert result.ok and result.after == f"{2 * MS} ticks (2.0 ms)"


class TestLoadedHost:
    """A bound exceeded by no more than the host kept the vCPU waiting is not measured (host
    overloaded), never failed; anything beyond, or a CPU that never ticks, still fails."""

    def _late(self, starved: float | None, first: Tick | None = None) -> CheckResult:
        gap = TickGap(0, _tick(0, 7, 1_750), first or _tick(0, 8, 2_650), 900, starved_ms=starved,
                      host="dst: CPU 0 410 ms waited for a host CPU")
        return _verdicts(_healthy(hop_gaps=((gap,),)))["timer ticks on schedule"]

    def test_a_late_tick_the_host_accounts_for_is_not_measured(self) -> None:
        result = self._late(starved=410.0)  # 900 ms against 830: 70 ms over, 410 ms starved
        assert (result.verdict, result.cause) == (Verdict.NOT_MEASURED, HOST_OVERLOADED)
        assert "waited for a host CPU (410 ms)" in result.evidence

    def test_a_late_tick_beyond_the_starvation_fails(self) -> None:
        assert self._late(starved=40.0).verdict is Verdict.FAILED

    def test_a_tick_that_never_comes_fails_however_loaded_the_host(self) -> None:
        gap = TickGap(0, _tick(0, 7, 1_750), None, 1_830, starved_ms=5_000.0)
        result = _verdicts(_healthy(hop_gaps=((gap,),)))["timer ticks on schedule"]
        assert result.verdict is Verdict.FAILED

    def test_a_jump_the_host_accounts_for_is_not_measured(self) -> None:
        gaps = tuple(TickGap(c, _tick(c, 7, 1_750), _tick(c, 8, 2_850), 900, starved_ms=800.0)
                     for c in (0, 1))
        result = _verdicts(_healthy(hop_gaps=(gaps,)))["timebase forward jump within bound"]
        assert (result.verdict, result.cause) == (Verdict.NOT_MEASURED, HOST_OVERLOADED)


class TestDeviceTraffic:
    NAME = "virtio devices answer on the destination"

    def _after(self, *reads: RngRead, pci: str = "0000:00:00.0") -> Observations:
        after = RngReport(seq=30, req=9, devices=(VirtioDevice(pci, "virtio0"),), reads=reads)
        return _healthy(devices=DeviceTraffic(RNG, after, ("0000:00:00.0",)))

    def test_a_read_that_times_out_fails_naming_the_device(self) -> None:
        failed = _failed(self._after(RngRead("virtio_rng.0", 3, 2_001_000, {})))
        assert failed[self.NAME].startswith("0000:00:00.0: no interrupt during any read "
                                            "(reads without one: virtio_rng.0: 3 bytes in 2001 ms)")

    def test_bytes_without_the_devices_interrupt_are_no_answer(self) -> None:
        """A read served without the device's own interrupt (its MSI lost, data from elsewhere)."""
        failed = _failed(self._after(RngRead("virtio_rng.0", 256, 900, {"virtio1": 1})))
        assert "0000:00:00.0: no interrupt during any read" in failed[self.NAME]

    def test_a_short_read_with_interrupts_fails(self) -> None:
        failed = _failed(self._after(RngRead("virtio_rng.0", 64, 2_000_000, {"virtio0": 1})))
        assert "0000:00:00.0: 64 of 256 bytes in 2000.0 ms, 1 interrupts" in failed[self.NAME]

    def test_a_device_gone_from_the_guest_fails(self) -> None:
        failed = _failed(self._after(RngRead("virtio_rng.0", 256, 900, {"virtio0": 2}), pci="0000:00:01.0"))
        assert failed[self.NAME].startswith("0000:00:00.0: not in the guest")

    def test_a_guest_without_a_virtio_device_has_nothing_to_read(self) -> None:
        """Debian's kernel has no virtio driver: no device on the source, none expected."""
        empty = RngReport(seq=12, req=6, devices=(), reads=())
        obs = _healthy(devices=DeviceTraffic(empty, empty, ()))
        assert _verdicts(obs)[self.NAME].verdict == Verdict.NOT_APPLICABLE

    def test_a_stalled_guest_is_not_asked_and_the_stall_is_the_cause(self) -> None:
        gaps = (TickGap(0, _tick(0, 7, 1_750), None, 1_830), TickGap(1, _tick(1, 7, 1_760), None, 1_830))
        obs = _healthy(hop_gaps=(gaps,), devices=DeviceTraffic(RNG, None, ("0000:00:00.0",)))
        verdict = _verdicts(obs)[self.NAME]
        assert (verdict.verdict, verdict.cause) == (Verdict.NOT_MEASURED, "timer-ticks-on-schedule")

    def test_unanswered_is_not_measured(self) -> None:
        obs = _healthy(devices=DeviceTraffic(RNG, None, ("0000:00:00.0",)), silence="no reply to 'rng'")
        assert _verdicts(obs)[self.NAME].verdict == Verdict.NOT_MEASURED

