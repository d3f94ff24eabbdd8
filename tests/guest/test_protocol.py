"""Unit tests for harness.guest.protocol against guests/golden/PROTOCOL.md."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from harness.guest.protocol import (
    AgentError,
    Busy,
    CpuOnline,
    CpuTbStats,
    Dlpar,
    Hello,
    IpiPair,
    IpiReport,
    Ok,
    PciDevice,
    Probe,
    ProtocolError,
    RngRead,
    RngReport,
    TbStats,
    ThreadPlacement,
    Tick,
    VirtioDevice,
    encode_command,
    parse_cpu_list,
    parse_line,
)


def agent_line(kind: str, seq: int, payload: Any, crc: int | None = None) -> str:
    """A line as the agent writes it (compact JSON, CRC over "<type> <seq> <payload>")."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    if crc is None:
        crc = zlib.crc32(f"{kind} {seq} {text}".encode())
    return f"##GM {kind} {seq} {crc:08x} {text}"


PROBE = {
    "req": 7,
    "tb": 5325980593,
    "tb_freq": 512000000,
    "uptime": "9.38",
    "intc": "XIVE",
    "intc_names": ["XIVE-IPI", "XIVE-IRQ"],
    "cpus_online": "0-1",
    "cpus_present": "0-3",
    "mem_total_kb": 480000,
    "load": "idle",
    "threads": [
        {"role": "tick", "cpu": 0, "ran_on": 0},
        {"role": "busy", "cpu": 0, "ran_on": -1},
        {"role": "timer", "cpu": 1, "ran_on": 1},
        {"role": "ipi", "cpu": 1, "ran_on": 0},
        {"role": "report", "cpu": 1, "ran_on": 1},
    ],
    "pci": [
        {
            "addr": "0000:00:00.0",
            "vendor": "0x1af4",
            "device": "0x1005",
            "class": "0x00ff00",
            "bars": ["0x0000000000001000-0x000000000000101f 0x0000000000040101"],
        }
    ],
    "phb_ranges": {"pci@800000020000000": "0100000000000000"},
}

CPU_STATS = {
    "cpu": 0,
    "samples": 10,
    "max_back": 0,
    "max_fwd": 5,
    "max_fwd_at": 8,
    "last": 9,
    "timer_wakeups": 0,
}
TBSTATS = {"req": 2, "cpus": [CPU_STATS, {**CPU_STATS, "cpu": 1, "samples": 0, "timer_wakeups": 7}]}
IPI = {
    "req": 3,
    "pairs": [{"from": 0, "to": 1, "ticks": 51200}, {"from": 1, "to": 0, "ticks": -1}],
}

# As the agent printed them for a virtio-rng-pci plugged on PHB 0 (QEMU 7.2, pseries-7.2).
DLPAR = {"drc": 1073741848, "action": "add", "slot": "C24", "failed": "", "why": "",
         "tb_event": 371691612, "tb_done": 429401131}
RNG = {"req": 2, "devices": [{"pci": "0000:00:03.0", "virtio": "virtio0"}],
       "reads": [{"name": "virtio_rng.0", "bytes": 256, "us": 15609, "irqs": {"virtio0": 2}},
                 {"name": "virtio_rng.1", "bytes": -1, "us": 0, "irqs": {}}]}


class TestParseValid:
    def test_hello(self) -> None:
        line = agent_line("hello", 1, {"agent": 6, "tb_freq": 512000000, "cpus": "0-1"})
        assert parse_line(line) == Hello(seq=1, agent=6, tb_freq=512000000, cpus="0-1")

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            # As a boot of the golden image under QEMU 7.2 with -smp 2 prints it.
            (
                '##GM hello 1 caa1bb12 {"agent":6,"tb_freq":512000000,"cpus":"0-1"}\r',
                Hello(seq=1, agent=6, tb_freq=512000000, cpus="0-1"),
            ),
            ('##GM cpu 3 ad05a47f {"cpu":1}\r', CpuOnline(seq=3, cpu=1)),
            (
                '##GM busy 32 41a82048 {"cpu":1,"n":1,"iter":38248448,"tb":2615130234}\r',
                Busy(seq=32, cpu=1, n=1, iter=38248448, tb=2615130234),
            ),
            (
                '##GM tick 5 56eb195e {"cpu":0,"n":1,"tb":1059757238}\r',
                Tick(seq=5, cpu=0, n=1, tb=1059757238),
            ),
            (
                '##GM ipi 93 654db8e7 {"req":6,"pairs":[{"from":0,"to":1,"ticks":567422},'
                '{"from":1,"to":0,"ticks":158253}]}\r',
                IpiReport(seq=93, req=6, pairs=(IpiPair(0, 1, 567422), IpiPair(1, 0, 158253))),
            ),
        ],
    )
    def test_lines_captured_from_the_real_agent(self, line: str, message: object) -> None:
        assert parse_line(line) == message

    def test_cpu(self) -> None:
        assert parse_line(agent_line("cpu", 2, {"cpu": 5})) == CpuOnline(seq=2, cpu=5)

    def test_busy(self) -> None:
        line = agent_line("busy", 8, {"cpu": 1, "n": 3, "iter": 10, "tb": 99})
        assert parse_line(line) == Busy(seq=8, cpu=1, n=3, iter=10, tb=99)

    def test_tick(self) -> None:
        line = agent_line("tick", 3, {"cpu": 1, "n": 2, "tb": 99})
        assert parse_line(line) == Tick(seq=3, cpu=1, n=2, tb=99)

    def test_probe(self) -> None:
        msg = parse_line(agent_line("probe", 40, PROBE))
        assert isinstance(msg, Probe)
        assert (msg.seq, msg.req, msg.intc, msg.cpus_online) == (40, 7, "XIVE", "0-1")
        assert (msg.cpus_present, msg.load) == ("0-3", "idle")
        assert msg.threads == (
            ThreadPlacement(role="tick", cpu=0, ran_on=0),
            ThreadPlacement(role="busy", cpu=0, ran_on=-1),
            ThreadPlacement(role="timer", cpu=1, ran_on=1),
            ThreadPlacement(role="ipi", cpu=1, ran_on=0),
            ThreadPlacement(role="report", cpu=1, ran_on=1),
        )
        assert msg.intc_names == ("XIVE-IPI", "XIVE-IRQ")
        assert msg.pci == (
            PciDevice(
                addr="0000:00:00.0",
                vendor="0x1af4",
                device="0x1005",
                pci_class="0x00ff00",
                bars=("0x0000000000001000-0x000000000000101f 0x0000000000040101",),
            ),
        )
        assert msg.phb_ranges == {"pci@800000020000000": "0100000000000000"}

    def test_probes_with_same_content_compare_equal(self) -> None:
        line = agent_line("probe", 1, PROBE)
        assert parse_line(line) == parse_line(line)

    def test_tbstats(self) -> None:
        msg = parse_line(agent_line("tbstats", 4, TBSTATS))
        cpu0 = CpuTbStats(
            cpu=0, samples=10, max_back=0, max_fwd=5, max_fwd_at=8, last=9, timer_wakeups=0
        )
        cpu1 = CpuTbStats(
            cpu=1, samples=0, max_back=0, max_fwd=5, max_fwd_at=8, last=9, timer_wakeups=7
        )
        assert msg == TbStats(seq=4, req=2, cpus=(cpu0, cpu1))
        assert msg.for_cpu(1) == cpu1
        with pytest.raises(KeyError, match="no cpu 2"):
            msg.for_cpu(2)

    def test_ipi(self) -> None:
        assert parse_line(agent_line("ipi", 9, IPI)) == IpiReport(
            seq=9,
            req=3,
            pairs=(
                IpiPair(from_cpu=0, to_cpu=1, ticks=51200),
                IpiPair(from_cpu=1, to_cpu=0, ticks=-1),
            ),
        )

    def test_ipi_with_one_cpu_has_no_pairs(self) -> None:
        assert parse_line(agent_line("ipi", 9, {"req": 1, "pairs": []})) == IpiReport(9, 1, ())

    def test_dlpar(self) -> None:
        msg = parse_line(agent_line("dlpar", 4, DLPAR))
        assert msg == Dlpar(4, 1073741848, "add", "C24", "", "", 371691612, 429401131)
        assert isinstance(msg, Dlpar) and msg.ok
        failed = {**DLPAR, "failed": "configure-connector", "why": "configure-connector returned -9003"}
        assert not parse_line(agent_line("dlpar", 5, failed)).ok  # type: ignore[union-attr]

    def test_rng(self) -> None:
        msg = parse_line(agent_line("rng", 9, RNG))
        assert isinstance(msg, RngReport)
        assert msg.devices == (VirtioDevice("0000:00:03.0", "virtio0"),)
        assert msg.reads[0] == RngRead("virtio_rng.0", 256, 15609, {"virtio0": 2})
        assert msg.reads[1].bytes == -1 and dict(msg.reads[1].irqs) == {}

    def test_ok_error(self) -> None:
        assert parse_line(agent_line("ok", 5, {"req": 3})) == Ok(seq=5, req=3)
        error = {"req": -1, "error": "command too long"}
        assert parse_line(agent_line("error", 6, error)) == AgentError(6, -1, "command too long")

    def test_messages_are_frozen(self) -> None:
        msg = parse_line(agent_line("tick", 3, {"cpu": 0, "n": 2, "tb": 99}))
        with pytest.raises(AttributeError):
            msg.n = 5  # type: ignore[union-attr,misc]


class TestNonAgentLines:
    @pytest.mark.parametrize(
        "line", ["", "[    0.163915] nvram: Failed to find partition", "GM busy 1", "## GM x"]
    )
    def test_no_marker_is_none(self, line: str) -> None:
        assert parse_line(line) is None

    def test_kernel_text_before_the_marker(self) -> None:
        tick = agent_line("tick", 9, {"cpu": 0, "n": 4, "tb": 1})
        line = "[   12.5] random: crng init done" + tick
        assert parse_line(line) == Tick(seq=9, cpu=0, n=4, tb=1)

    def test_trailing_cr_lf_ignored(self) -> None:
        line = agent_line("ok", 2, {"req": 1}) + "\r\n"
        assert parse_line(line) == Ok(seq=2, req=1)


class TestSeq:
    def test_seq_is_parsed_and_covered_by_the_crc(self) -> None:
        good = agent_line("ok", 12, {"req": 1})
        assert parse_line(good) == Ok(seq=12, req=1)
        with pytest.raises(ProtocolError) as err:
            parse_line(good.replace(" ok 12 ", " ok 13 "))
        assert err.value.corrupt

    @pytest.mark.parametrize("seq", ["-1", "01", "x", ""])
    def test_bad_seq_is_rejected(self, seq: str) -> None:
        with pytest.raises(ProtocolError):
            parse_line(f'##GM ok {seq} 00000000 {{"req":1}}')


class TestCorrupt:
    def test_bad_crc(self) -> None:
        line = agent_line("tick", 3, {"cpu": 0, "n": 2, "tb": 99}, crc=0x12345678)
        with pytest.raises(ProtocolError) as err:
            parse_line(line)
        assert err.value.line == line
        assert err.value.corrupt

    def test_interleaved_kernel_text_fails_crc(self) -> None:
        line = agent_line("tick", 3, {"cpu": 0, "n": 2, "tb": 99})
        broken = line[:30] + "[  3.1] oops" + line[30:]
        with pytest.raises(ProtocolError, match="CRC"):
            parse_line(broken)

    @pytest.mark.parametrize(
        "tail", ["", "tick", "tick 3", "tick 3 zzzzzzzz {}", "Tick 3 00000000 {}", "tick 3 1234 {}"]
    )
    def test_malformed_header(self, tail: str) -> None:
        with pytest.raises(ProtocolError):
            parse_line("##GM " + tail)


class TestBadPayload:
    def test_bad_json(self) -> None:
        line = agent_line("tick", 3, '{"cpu": 0, "n": 2, "tb": ')
        with pytest.raises(ProtocolError, match="not JSON") as err:
            parse_line(line)
        assert err.value.line == line
        assert not err.value.corrupt

    @pytest.mark.parametrize(
        ("kind", "payload", "problem"),
        [
            ("tick", [1, 2], "not a JSON object"),
            ("tick", {"cpu": 0, "n": 2}, "lacks 'tb'"),
            ("tick", {"n": 2, "tb": 1}, "lacks 'cpu'"),
            ("tick", {"cpu": 0, "n": 2, "tb": 1, "extra": 0}, "unknown keys"),
            ("tick", {"cpu": 0, "n": "2", "tb": 1}, "'n' must be"),
            ("tick", {"cpu": 0, "n": True, "tb": 1}, "'n' must be"),
            ("tick", {"cpu": 0, "n": 0, "tb": 1}, "'n' must be"),
            ("tick", {"cpu": -1, "n": 1, "tb": 1}, "'cpu' must be"),
            ("busy", {"cpu": 0, "n": 1, "tb": 1}, "lacks 'iter'"),
            ("busy", {"n": 1, "iter": 5, "tb": 1}, "lacks 'cpu'"),
            ("busy", {"cpu": "1", "n": 1, "iter": 5, "tb": 1}, "'cpu' must be"),
            ("cpu", {}, "lacks 'cpu'"),
            ("cpu", {"cpu": 1.0}, "'cpu' must be"),
            ("cpu", {"cpu": 1, "online": True}, "unknown keys"),
            ("ok", {"req": -1}, "'req' must be"),
            ("hello", {"agent": 1, "tb_freq": 512000000}, "protocol 1"),
            ("hello", {"agent": 2, "tb_freq": 1, "cpus": "0"}, "protocol 2"),
            ("hello", {"agent": 3, "tb_freq": 1, "cpus": "0"}, "protocol 3"),
            ("hello", {"agent": 4, "tb_freq": 1, "cpus": "0"}, "protocol 4"),
            ("hello", {"agent": 6, "tb_freq": 512000000}, "lacks 'cpus'"),
            ("hello", {"agent": 6, "tb_freq": 1, "cpus": ""}, "'cpus' must be a CPU list"),
            ("hello", {"agent": 6, "tb_freq": 1, "cpus": "1-0"}, "'cpus' must be a CPU list"),
            ("hello", {"agent": 6, "tb_freq": 1, "cpus": [0, 1]}, "'cpus' must be a string"),
            ("probe", {**PROBE, "pci": [{"addr": "x"}]}, "lacks 'vendor'"),
            ("probe", {**PROBE, "phb_ranges": {"pci@1": 5}}, "must be a string"),
            ("probe", {**PROBE, "intc_names": "XICS"}, "list of strings"),
            ("probe", {k: v for k, v in PROBE.items() if k != "cpus_present"}, "lacks 'cpus_present'"),
            ("probe", {**PROBE, "load": "spin"}, "'load' must be one of idle, busy, timer"),
            ("probe", {**PROBE, "load": None}, "'load' must be one of"),
            ("probe", {**PROBE, "threads": {}}, "'threads' must be a list of objects"),
            ("probe", {**PROBE, "threads": [{"role": "ipi", "cpu": 0}]}, "lacks 'ran_on'"),
            (
                "probe",
                {**PROBE, "threads": [{"role": "idle", "cpu": 0, "ran_on": 0}]},
                r"probe.threads\[0\] payload 'role' must be one of tick, busy, timer, ipi, report",
            ),
            ("probe", {**PROBE, "threads": [{"role": "ipi", "cpu": 0, "ran_on": -2}]}, "'ran_on'"),
            ("dlpar", {**DLPAR, "action": "replace"}, "'action' must be one of add, remove, unknown"),
            ("dlpar", {k: v for k, v in DLPAR.items() if k != "failed"}, "lacks 'failed'"),
            ("rng", {**RNG, "reads": [{**RNG["reads"][0], "irqs": {"virtio0": 0}}]}, "'virtio0' must be"),
            ("rng", {**RNG, "reads": [{**RNG["reads"][0], "bytes": -2}]}, "'bytes' must be"),
            ("rng", {**RNG, "devices": [{"pci": "0000:00:03.0"}]}, "lacks 'virtio'"),
            ("tbstats", {"req": 2, "samples": 1}, "lacks 'cpus'"),
            ("tbstats", {**TBSTATS, "cpus": [{**CPU_STATS, "timer_wakeups": -1}]}, "'timer_wakeups'"),
            ("tbstats", {**TBSTATS, "cpus": [{**CPU_STATS, "watts": 1}]}, "unknown keys"),
            (
                "tbstats",
                {**TBSTATS, "cpus": [{k: v for k, v in CPU_STATS.items() if k != "last"}]},
                "lacks 'last'",
            ),
            ("tbstats", {**TBSTATS, "cpus": [CPU_STATS, CPU_STATS]}, "distinct and ascending"),
            (
                "tbstats",
                {**TBSTATS, "cpus": [{**CPU_STATS, "cpu": 1}, CPU_STATS]},
                "distinct and ascending",
            ),
            ("ipi", {"req": 3}, "lacks 'pairs'"),
            ("ipi", {"req": 3, "pairs": [{"from": 0, "to": 1}]}, "lacks 'ticks'"),
            ("ipi", {"req": 3, "pairs": [{"from": 0, "to": 1, "ticks": -2}]}, "'ticks' must be"),
            ("ipi", {"req": 3, "pairs": [{"from": 1, "to": 1, "ticks": 5}]}, "to itself"),
            ("ipi", {"req": 3, "pairs": [{"from": 0, "to": 1, "ticks": 5, "ns": 1}]}, "unknown keys"),
            ("frob", {}, "unknown agent message type"),
        ],
    )
    def test_rejected(self, kind: str, payload: Any, problem: str) -> None:
        line = agent_line(kind, 1, payload)
        with pytest.raises(ProtocolError, match=problem) as err:
            parse_line(line)
        assert err.value.line == line


class TestCpuList:
    @pytest.mark.parametrize(
        ("text", "cpus"),
        [("0", (0,)), ("0-1", (0, 1)), ("0-3,5", (0, 1, 2, 3, 5)), ("4,0-1", (0, 1, 4)), ("2-2", (2,))],
    )
    def test_parsed(self, text: str, cpus: tuple[int, ...]) -> None:
        assert parse_cpu_list(text) == cpus

    @pytest.mark.parametrize("text", ["", "0-", "-1", "1-0", "0,", ",0", "0 1", "01", "a", "0-1\n"])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(ValueError, match="not a CPU list"):
            parse_cpu_list(text)


class TestEncodeCommand:
    def test_encoding(self) -> None:
        assert encode_command("probe", 1) == b"probe 1\n"
        assert encode_command("loadtimer", 3) == b"loadtimer 3\n"
        assert encode_command("ipi", 4) == b"ipi 4\n"
        assert encode_command("tbstats", 12345678901) == b"tbstats 12345678901\n"
        assert encode_command("tbreset", 0) == b"tbreset 0\n"

    @pytest.mark.parametrize("name", ["", "Probe", "probe 1", "tb-stats", "probe\n"])
    def test_bad_name(self, name: str) -> None:
        with pytest.raises(ValueError):
            encode_command(name, 1)

    @pytest.mark.parametrize("req_id", [-1, True, 1.0])
    def test_bad_id(self, req_id: Any) -> None:
        with pytest.raises(ValueError):
            encode_command("probe", req_id)
