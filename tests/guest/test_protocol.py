"""Unit tests for harness.guest.protocol against guests/golden/PROTOCOL.md."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from harness.guest.protocol import (
    AgentError,
    Busy,
    Hello,
    Ok,
    PciDevice,
    Probe,
    ProtocolError,
    TbStats,
    Tick,
    encode_command,
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


class TestParseValid:
    def test_hello(self) -> None:
        line = agent_line("hello", 1, {"agent": 1, "tb_freq": 512000000})
        assert parse_line(line) == Hello(seq=1, agent=1, tb_freq=512000000)

    def test_line_captured_from_the_real_agent(self) -> None:
        # Verbatim from a boot of the golden image under QEMU 7.2.
        line = '##GM busy 6 81e50b3f {"n":1,"iter":5520407,"tb":1859032268}\r'
        assert parse_line(line) == Busy(seq=6, n=1, iter=5520407, tb=1859032268)

    def test_tick(self) -> None:
        assert parse_line(agent_line("tick", 3, {"n": 2, "tb": 99})) == Tick(seq=3, n=2, tb=99)

    def test_probe(self) -> None:
        msg = parse_line(agent_line("probe", 40, PROBE))
        assert isinstance(msg, Probe)
        assert (msg.seq, msg.req, msg.intc, msg.cpus_online) == (40, 7, "XIVE", "0-1")
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

    def test_tbstats_ok_error(self) -> None:
        stats = {"req": 2, "samples": 10, "max_back": 0, "max_fwd": 5, "max_fwd_at": 8, "last": 9}
        assert parse_line(agent_line("tbstats", 4, stats)) == TbStats(seq=4, **stats)
        assert parse_line(agent_line("ok", 5, {"req": 3})) == Ok(seq=5, req=3)
        error = {"req": -1, "error": "command too long"}
        assert parse_line(agent_line("error", 6, error)) == AgentError(6, -1, "command too long")

    def test_messages_are_frozen(self) -> None:
        msg = parse_line(agent_line("tick", 3, {"n": 2, "tb": 99}))
        with pytest.raises(AttributeError):
            msg.n = 5  # type: ignore[union-attr,misc]


class TestNonAgentLines:
    @pytest.mark.parametrize(
        "line", ["", "[    0.163915] nvram: Failed to find partition", "GM busy 1", "## GM x"]
    )
    def test_no_marker_is_none(self, line: str) -> None:
        assert parse_line(line) is None

    def test_kernel_text_before_the_marker(self) -> None:
        line = "[   12.5] random: crng init done" + agent_line("tick", 9, {"n": 4, "tb": 1})
        assert parse_line(line) == Tick(seq=9, n=4, tb=1)

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
        line = agent_line("tick", 3, {"n": 2, "tb": 99}, crc=0x12345678)
        with pytest.raises(ProtocolError) as err:
            parse_line(line)
        assert err.value.line == line
        assert err.value.corrupt

    def test_interleaved_kernel_text_fails_crc(self) -> None:
        line = agent_line("tick", 3, {"n": 2, "tb": 99})
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
        line = agent_line("tick", 3, '{"n": 2, "tb": ')
        with pytest.raises(ProtocolError, match="not JSON") as err:
            parse_line(line)
        assert err.value.line == line
        assert not err.value.corrupt

    @pytest.mark.parametrize(
        ("kind", "payload", "problem"),
        [
            ("tick", [1, 2], "not a JSON object"),
            ("tick", {"n": 2}, "lacks 'tb'"),
            ("tick", {"n": 2, "tb": 1, "extra": 0}, "unknown keys"),
            ("tick", {"n": "2", "tb": 1}, "'n' must be"),
            ("tick", {"n": True, "tb": 1}, "'n' must be"),
            ("tick", {"n": 0, "tb": 1}, "'n' must be"),
            ("ok", {"req": -1}, "'req' must be"),
            ("hello", {"agent": 2, "tb_freq": 512000000}, "protocol 2"),
            ("probe", {**PROBE, "pci": [{"addr": "x"}]}, "lacks 'vendor'"),
            ("probe", {**PROBE, "phb_ranges": {"pci@1": 5}}, "must be a string"),
            ("probe", {**PROBE, "intc_names": "XICS"}, "list of strings"),
            ("frob", {}, "unknown agent message type"),
        ],
    )
    def test_rejected(self, kind: str, payload: Any, problem: str) -> None:
        line = agent_line(kind, 1, payload)
        with pytest.raises(ProtocolError, match=problem) as err:
            parse_line(line)
        assert err.value.line == line


class TestEncodeCommand:
    def test_encoding(self) -> None:
        assert encode_command("probe", 1) == b"probe 1\n"
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
