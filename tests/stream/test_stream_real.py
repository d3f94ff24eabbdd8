"""Real streams from QEMU 5.2, 7.2 and 10.0: same reading as QEMU's analyze-migration.py,
and the summary says what the machine really was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.stream.compat import analyze_state
from harness.stream.parser import StreamParser, iter_records
from harness.stream.peer import PeerError, PeerScripts, run_analyze
from harness.stream.reader import StreamReader
from harness.stream.recorder import RecordedStream
from harness.stream.records import DeviceState, Undecoded
from harness.stream.summary import StreamSummary, summarise

pytestmark = pytest.mark.slow

Maker = Callable[..., RecordedStream]

LABELS = ("5.2", "7.2", "10.0")
IC_MODES = ("xics", "xive")

IC_SECTIONS = {"xics": {"ics", "icp/server"}, "xive": {"xive-source", "spapr-xive", "xive-tctx"}}
IC_FDT = {"xics": "IBM,ppc-xicp", "xive": "ibm,power-ivpe"}


def same_as_analyze(peer: PeerScripts, path: Path) -> None:
    def raw(offset: int, size: int) -> bytes:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(size)

    theirs = run_analyze(peer, path)
    ours = analyze_state(iter_records(path), raw)
    assert list(ours) == list(theirs), "section lists differ"
    for key in theirs:
        assert ours[key] == theirs[key], f"section {key} differs"


class TestSameAsAnalyzeMigration:
    @pytest.mark.parametrize("ic_mode", IC_MODES)
    @pytest.mark.parametrize("label", LABELS)
    def test_stopped_machine(self, label: str, ic_mode: str, stopped: Maker, peer: PeerScripts) -> None:
        same_as_analyze(peer, stopped(label, ic_mode).path)

    @pytest.mark.parametrize(("label", "ic_mode", "machine", "memory_mb"), [
        ("7.2", "dual", "pseries-7.2", 512),
        ("7.2", "xics", "pseries-7.2", 256),
        ("10.0", "dual", "pseries-7.2", 256),
    ])
    def test_running_guest(self, label: str, ic_mode: str, machine: str, memory_mb: int,
                           running: Maker, peer: PeerScripts) -> None:
        same_as_analyze(peer, running(label, ic_mode, machine=machine, memory_mb=memory_mb).path)

    def test_without_footers_or_configuration(self, stopped: Maker, peer: PeerScripts) -> None:
        same_as_analyze(peer, stopped("7.2", machine="pseries-2.3").path)


class TestSummaryOfAStoppedMachine:
    @pytest.fixture(params=[(label, ic) for label in LABELS for ic in IC_MODES],
                    ids=lambda p: f"{p[0]}-{p[1]}")
    def case(self, request: pytest.FixtureRequest, stopped: Maker) -> tuple[str, str, StreamSummary]:
        label, ic_mode = request.param
        return label, ic_mode, summarise(stopped(label, ic_mode).path)

    def test_sections_match_the_interrupt_controller(self, case: tuple[str, str, StreamSummary]) -> None:
        label, ic_mode, s = case
        assert s.machine == f"pseries-{label}"
        names = {sec.idstr for sec in s.sections}
        assert IC_SECTIONS[ic_mode] <= names
        other = "xive" if ic_mode == "xics" else "xics"
        assert not IC_SECTIONS[other] & names
        assert all(sec.decoded for sec in s.sections)
        iommu = [sec for sec in s.sections if sec.idstr == "spapr_iommu"]
        assert {sec.instance_id for sec in iommu} == {0x80000000, 0x80000001}

    def test_ram_sent_every_page_once(self, case: tuple[str, str, StreamSummary]) -> None:
        _, _, s = case
        assert s.ram is not None
        assert [(b.name, b.size) for b in s.ram.blocks] == [("ppc_spapr.ram", 256 << 20)]
        assert s.ram.counts.zero + s.ram.counts.normal == (256 << 20) // 4096
        assert s.htab is not None and s.htab.shift == 21  # 1/128 of 256 MiB

    def test_spapr_state(self, case: tuple[str, str, StreamSummary]) -> None:
        _, ic_mode, s = case
        assert s.spapr is not None and s.spapr.timebase is not None
        assert s.spapr.timebase.guest_timebase > 0
        assert s.spapr.timebase.time_of_the_day_ns > 1_600_000_000 * 10**9
        caps = {c.name: c.meaning for c in s.spapr.caps}
        assert caps["cfpc"] == "broken" and caps["ibs"] == "broken" and caps["ccf_assist"] == "off"
        assert s.spapr.cas is not None and s.spapr.cas.interrupt_controller == "none"
        fdt = s.spapr.fdt
        assert fdt is not None and fdt.interrupt_controller == (IC_FDT[ic_mode],)
        assert [c.path for c in fdt.cpus] == ["/cpus/PowerPC,POWER9@0"]
        (phb,) = fdt.phbs
        windows = {w.space: (w.cpu_address, w.size) for w in phb.windows}
        assert windows["io"] == (0x200000000000, 0x10000)
        assert windows["mem32"] == (0x200080000000, 0x80000000)
        assert windows["mem64"][1] == 1 << 40
        assert fdt.memory == ((0, 256 << 20),)

    def test_text_and_json(self, case: tuple[str, str, StreamSummary]) -> None:
        _, _, s = case
        text = s.to_text()
        assert "ppc_spapr.ram" in text and "spapr_iommu" in text and "0x80000001" in text
        assert '"guest_timebase"' in s.to_json()


class TestSummaryOfARunningGuest:
    @pytest.mark.parametrize(("ic_mode", "negotiated"), [("dual", "XIVE"), ("xics", "XICS")])
    def test_cas_says_which_interrupt_controller(self, ic_mode: str, negotiated: str,
                                                 running: Maker) -> None:
        memory = 512 if ic_mode == "dual" else 256
        s = summarise(running("7.2", ic_mode, machine="pseries-7.2", memory_mb=memory).path)
        assert s.spapr is not None and s.spapr.cas is not None
        assert s.spapr.cas.interrupt_controller == negotiated
        assert s.spapr.cas.mmu == "radix"
        assert s.htab is not None and s.htab.no_hpt  # a radix guest freed its HPT
        assert s.spapr.fdt is not None
        assert s.spapr.fdt.interrupt_controller == (IC_FDT["xive" if negotiated == "XIVE" else "xics"],)
        assert s.ram is not None and s.ram.counts.pages >= (memory << 20) // 4096


class TestWithoutVmdesc:
    def test_pseries_2_2_lists_what_pseries_2_3_decodes(self, stopped: Maker, peer: PeerScripts) -> None:
        old = summarise(stopped("7.2", machine="pseries-2.2", ).path)
        described = summarise(stopped("7.2", machine="pseries-2.3").path)
        assert not old.has_vmdesc and described.has_vmdesc
        assert not old.footers and old.machine is None
        shape = [(s.idstr, s.instance_id, s.version_id, s.size) for s in old.sections]
        assert shape == [(s.idstr, s.instance_id, s.version_id, s.size) for s in described.sections]
        undecoded = [s for s in old.sections if not s.decoded]
        assert undecoded and all("no vmdesc" in s.note for s in undecoded)
        assert {s.idstr for s in old.sections if s.decoded} == {"ram", "spapr/htab"}
        with pytest.raises(PeerError):  # analyze-migration.py cannot read these at all
            run_analyze(peer, stopped("7.2", machine="pseries-2.2").path)

    def test_records_say_why(self, stopped: Maker) -> None:
        records = list(iter_records(stopped("7.2", machine="pseries-2.2").path))
        assert not [r for r in records if isinstance(r, DeviceState)]
        assert {r.reason for r in records if isinstance(r, Undecoded)} == {
            "no vmdesc in the stream (pseries-2.2 and older suppress it)"}


def test_smallest_window_reads_the_same(stopped: Maker) -> None:
    path = stopped("7.2", "xive").path
    with path.open("rb") as f:
        small = list(StreamParser(StreamReader(f, str(path), window=4096)).records())
    assert small == list(iter_records(path))
