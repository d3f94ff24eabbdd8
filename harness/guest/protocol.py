"""The harness side of the guest agent's console protocol (guests/golden/PROTOCOL.md, v1).

Each agent line is ``##GM <type> <seq> <crc> <payload>`` anywhere in a console
line (kernel text may precede the marker).  :func:`parse_line` turns one
console line into a validated, frozen message, ``None`` for lines without the
marker, or raises :class:`ProtocolError` for a marker line that is corrupt (bad
CRC) or does not match the protocol (bad payload).  :func:`encode_command`
builds the harness's requests.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from harness.errors import HarnessError

PROTOCOL_VERSION: Final = 1
MARKER: Final = "##GM "

_HEADER = re.compile(r"([a-z]+) (0|[1-9][0-9]*) ([0-9a-f]{8}) (.*)", re.DOTALL)
_COMMAND = re.compile(r"[a-z]+")


class ProtocolError(HarnessError):
    """A console line carried the marker but is not a valid agent message.

    ``line`` is the raw console line; ``corrupt`` is True when the CRC did not
    match (lost or interleaved output, counted and ignored per PROTOCOL.md)
    and False when the line is intact but breaks the protocol (agent and
    harness disagree).
    """

    def __init__(self, message: str, line: str, *, corrupt: bool = False) -> None:
        super().__init__(f"{message}: {line!r}")
        self.line = line
        self.corrupt = corrupt


@dataclass(frozen=True)
class Hello:
    """``hello``: the agent started."""

    seq: int
    agent: int
    tb_freq: int


@dataclass(frozen=True)
class Busy:
    """``busy``: CPU-progress heartbeat from the timebase watcher loop."""

    seq: int
    n: int
    iter: int
    tb: int


@dataclass(frozen=True)
class Tick:
    """``tick``: timer heartbeat, one per 250 ms of nanosleep."""

    seq: int
    n: int
    tb: int


@dataclass(frozen=True)
class PciDevice:
    """One ``pci`` entry of a probe."""

    addr: str
    vendor: str
    device: str
    pci_class: str  # "class" in the payload
    bars: tuple[str, ...]


@dataclass(frozen=True)
class Probe:
    """``probe``: what the guest sees (timebase, interrupts, CPUs, PCI, PHBs).

    ``phb_ranges`` is a read-only mapping (compares equal to a dict), so
    instances compare by value but are not hashable.
    """

    seq: int
    req: int
    tb: int
    tb_freq: int
    uptime: str
    intc: str
    intc_names: tuple[str, ...]
    cpus_online: str
    pci: tuple[PciDevice, ...]
    phb_ranges: Mapping[str, str]


@dataclass(frozen=True)
class TbStats:
    """``tbstats``: the timebase watcher's statistics since start or the last tbreset."""

    seq: int
    req: int
    samples: int
    max_back: int
    max_fwd: int
    max_fwd_at: int
    last: int


@dataclass(frozen=True)
class Ok:
    """``ok``: reply to ``tbreset``."""

    seq: int
    req: int


@dataclass(frozen=True)
class AgentError:
    """``error``: the agent refused a command (``req`` is -1 when it had no valid id)."""

    seq: int
    req: int
    error: str


AgentMessage = Hello | Busy | Tick | Probe | TbStats | Ok | AgentError


def encode_command(name: str, req_id: int) -> bytes:
    """The bytes of command ``<name> <id>\\n`` (PROTOCOL.md, "Commands the harness sends")."""
    if not _COMMAND.fullmatch(name):
        raise ValueError(f"command name must be lower-case letters, got {name!r}")
    if isinstance(req_id, bool) or not isinstance(req_id, int) or req_id < 0:
        raise ValueError(f"request id must be a non-negative int, got {req_id!r}")
    return f"{name} {req_id}\n".encode("ascii")


def parse_line(line: str) -> AgentMessage | None:
    """The agent message in one console line, or None if the line has no marker.

    Trailing CR/LF are ignored.  Raises :class:`ProtocolError` when the marker
    is present but the header, CRC or payload is invalid.
    """
    start = line.find(MARKER)
    if start < 0:
        return None
    match = _HEADER.fullmatch(line[start + len(MARKER) :].rstrip("\r\n"))
    if match is None:
        raise ProtocolError("malformed agent line header", line, corrupt=True)
    kind, seq_text, crc_text, payload = match.groups()
    # surrogateescape gives back the original bytes if the reader decoded that way
    body = f"{kind} {seq_text} {payload}".encode("utf-8", "surrogateescape")
    if zlib.crc32(body) != int(crc_text, 16):
        raise ProtocolError("agent line fails its CRC", line, corrupt=True)
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"agent payload is not JSON ({exc})", line) from exc
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ProtocolError(f"unknown agent message type {kind!r}", line)
    if not isinstance(data, dict):
        raise ProtocolError(f"{kind} payload is not a JSON object", line)
    try:
        return builder(_Payload(kind, data), int(seq_text))
    except _Invalid as exc:
        raise ProtocolError(str(exc), line) from None


class _Invalid(Exception):
    """A payload field is missing, extra or of the wrong type."""


class _Payload:
    """Typed, exhaustive access to one payload object: every key must be read once."""

    def __init__(self, kind: str, data: dict[str, Any]) -> None:
        self._kind = kind
        self._data = data
        self._read: set[str] = set()

    def _get(self, key: str) -> Any:
        if key not in self._data:
            raise _Invalid(f"{self._kind} payload lacks {key!r}")
        self._read.add(key)
        return self._data[key]

    def _bad(self, key: str, want: str) -> _Invalid:
        return _Invalid(f"{self._kind} payload {key!r} must be {want}, got {self._data[key]!r}")

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)

    def obj(self, key: str) -> _Payload:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return _Payload(f"{self._kind}.{key}", value)

    def objs(self, key: str) -> list[_Payload]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._bad(key, "a list of objects")
        return [_Payload(f"{self._kind}.{key}[{i}]", v) for i, v in enumerate(value)]

    def str_map(self) -> dict[str, str]:
        """This object as a str -> str mapping (all keys read)."""
        return {key: self.text(key) for key in self._data}

    def done(self) -> None:
        """Refuse keys the protocol version does not define."""
        extra = sorted(set(self._data) - self._read)
        if extra:
            raise _Invalid(f"{self._kind} payload has unknown keys {extra}")


def _hello(p: _Payload, seq: int) -> Hello:
    msg = Hello(seq, agent=p.integer("agent"), tb_freq=p.integer("tb_freq", 1))
    p.done()
    if msg.agent != PROTOCOL_VERSION:
        raise _Invalid(f"agent speaks protocol {msg.agent}, harness {PROTOCOL_VERSION}")
    return msg


def _busy(p: _Payload, seq: int) -> Busy:
    msg = Busy(seq, n=p.integer("n", 1), iter=p.integer("iter"), tb=p.integer("tb"))
    p.done()
    return msg


def _tick(p: _Payload, seq: int) -> Tick:
    msg = Tick(seq, n=p.integer("n", 1), tb=p.integer("tb"))
    p.done()
    return msg


def _pci(p: _Payload) -> PciDevice:
    dev = PciDevice(
        addr=p.text("addr"),
        vendor=p.text("vendor"),
        device=p.text("device"),
        pci_class=p.text("class"),
        bars=p.texts("bars"),
    )
    p.done()
    return dev


def _probe(p: _Payload, seq: int) -> Probe:
    msg = Probe(
        seq,
        req=p.integer("req"),
        tb=p.integer("tb"),
        tb_freq=p.integer("tb_freq"),
        uptime=p.text("uptime"),
        intc=p.text("intc"),
        intc_names=p.texts("intc_names"),
        cpus_online=p.text("cpus_online"),
        pci=tuple(_pci(d) for d in p.objs("pci")),
        phb_ranges=MappingProxyType(p.obj("phb_ranges").str_map()),
    )
    p.done()
    return msg


def _tbstats(p: _Payload, seq: int) -> TbStats:
    msg = TbStats(
        seq,
        req=p.integer("req"),
        samples=p.integer("samples"),
        max_back=p.integer("max_back"),
        max_fwd=p.integer("max_fwd"),
        max_fwd_at=p.integer("max_fwd_at"),
        last=p.integer("last"),
    )
    p.done()
    return msg


def _ok(p: _Payload, seq: int) -> Ok:
    msg = Ok(seq, req=p.integer("req"))
    p.done()
    return msg


def _error(p: _Payload, seq: int) -> AgentError:
    msg = AgentError(seq, req=p.integer("req", -1), error=p.text("error"))
    p.done()
    return msg


_BUILDERS: Final[Mapping[str, Callable[[_Payload, int], AgentMessage]]] = {
    "hello": _hello,
    "busy": _busy,
    "tick": _tick,
    "probe": _probe,
    "tbstats": _tbstats,
    "ok": _ok,
    "error": _error,
}
