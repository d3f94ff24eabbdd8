"""The harness side of the guest agent's console protocol (guests/golden/PROTOCOL.md, v6).

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
from typing import Any, Final, Literal, TypeVar, get_args

from harness.errors import HarnessError

PROTOCOL_VERSION: Final = 6
MARKER: Final = "##GM "

RNG_READ_BYTES: Final = 256
"""What each ``rng`` read asks of /dev/hwrng (more than virtio-rng keeps buffered)."""

LoadMode = Literal["idle", "busy", "timer"]
"""What the CPUs do besides the 250 ms ticks (PROTOCOL.md, "Load modes")."""
ThreadRole = Literal["tick", "busy", "timer", "ipi", "report"]
"""The agent's per-CPU threads (PROTOCOL.md, "Per-CPU threads")."""
LOAD_MODES: Final[tuple[LoadMode, ...]] = get_args(LoadMode)
THREAD_ROLES: Final[tuple[ThreadRole, ...]] = get_args(ThreadRole)

_HEADER = re.compile(r"([a-z]+) (0|[1-9][0-9]*) ([0-9a-f]{8}) (.*)", re.DOTALL)
_COMMAND = re.compile(r"[a-z]+")
_CPU_LIST = re.compile(r"(0|[1-9][0-9]*)(?:-(0|[1-9][0-9]*))?")


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
    """``hello``: the agent started; ``cpus`` is the online CPU list then (``"0-1"``)."""

    seq: int
    agent: int
    tb_freq: int
    cpus: str


@dataclass(frozen=True)
class CpuOnline:
    """``cpu``: the agent started its threads on ``cpu`` (at start, or after a hotplug)."""

    seq: int
    cpu: int


@dataclass(frozen=True)
class Busy:
    """``busy``: CPU-progress heartbeat of one CPU's spinner (only in load mode busy).

    ``n`` counts per CPU from 1 and carries on across idle periods; it may skip
    (the CPU's reporter writes the latest beat), never go back. ``iter`` is
    the spinner's loop iterations since it started and ``tb`` its mftb, both
    at the beat.
    """

    seq: int
    cpu: int
    n: int
    iter: int
    tb: int


@dataclass(frozen=True)
class Tick:
    """``tick``: timer heartbeat of one CPU, one per 250 ms of nanosleep, in every load mode."""

    seq: int
    cpu: int
    n: int
    tb: int


@dataclass(frozen=True)
class ThreadPlacement:
    """One per-CPU thread in a probe: pinned to ``cpu``, last seen running on ``ran_on``.

    ``ran_on`` is -1 while the thread has not run yet.
    """

    role: ThreadRole
    cpu: int
    ran_on: int


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
    cpus_present: str
    mem_total_kb: int
    """MemTotal of /proc/meminfo: the memory the kernel has online (hotplugged LMBs included)."""
    load: LoadMode
    threads: tuple[ThreadPlacement, ...]
    pci: tuple[PciDevice, ...]
    phb_ranges: Mapping[str, str]


@dataclass(frozen=True)
class CpuTbStats:
    """One CPU's timebase watcher statistics since start or the last tbreset.

    ``samples`` is 0 when the CPU's spinner has not spun since then (load mode
    not busy); ``timer_wakeups`` counts the 1 ms sleeps of load mode timer.
    """

    cpu: int
    samples: int
    max_back: int
    max_fwd: int
    max_fwd_at: int
    last: int
    timer_wakeups: int


@dataclass(frozen=True)
class TbStats:
    """``tbstats``: every CPU's watcher statistics, in CPU order."""

    seq: int
    req: int
    cpus: tuple[CpuTbStats, ...]

    def for_cpu(self, cpu: int) -> CpuTbStats:
        """The statistics of ``cpu``; KeyError if the agent has no threads there."""
        for stats in self.cpus:
            if stats.cpu == cpu:
                return stats
        raise KeyError(f"tbstats has no cpu {cpu} (cpus {[s.cpu for s in self.cpus]})")


@dataclass(frozen=True)
class CpuWarp:
    """One CPU's part in a ``tbwarp`` measurement, in timebase ticks (PROTOCOL.md, "Timebase
    across CPUs").

    ``cross`` of its ``samples`` followed another CPU's sample under the lock;
    ``max_warp`` is the largest step back from that sample to its own (the CPU
    was behind), ``min_gap`` and ``max_gap`` the smallest and largest step
    forward (the sampling interval between two CPUs; 0 without cross samples).
    """

    cpu: int
    samples: int
    cross: int
    max_warp: int
    min_gap: int
    max_gap: int


@dataclass(frozen=True)
class TbWarp:
    """``tbwarp``: every CPU's spinner sampled mftb against the others' for ``window`` ticks."""

    seq: int
    req: int
    window: int
    cpus: tuple[CpuWarp, ...]


@dataclass(frozen=True)
class IpiPair:
    """One IPI round trip: ``from_cpu`` woke ``to_cpu`` and back.

    ``ticks`` is the round trip in timebase ticks, -1 if no answer came within 1 s.
    """

    from_cpu: int
    to_cpu: int
    ticks: int


@dataclass(frozen=True)
class IpiReport:
    """``ipi``: one round trip for every ordered pair of distinct CPUs."""

    seq: int
    req: int
    pairs: tuple[IpiPair, ...]


@dataclass(frozen=True)
class Dlpar:
    """``dlpar``: the agent acted on a PCI hotplug event as drmgr would (PROTOCOL.md, "PCI
    hotplug"); ``failed`` names the step that failed (``why`` says how), empty when all passed."""

    seq: int
    drc: int
    action: str
    slot: str
    failed: str
    why: str
    tb_event: int
    tb_done: int

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class VirtioDevice:
    """A virtio device (``virtio<N>``, its name in /proc/interrupts) and its PCI function."""

    pci: str
    virtio: str


@dataclass(frozen=True)
class RngRead:
    """One read from /dev/hwrng with ``name`` selected: ``bytes`` of :data:`RNG_READ_BYTES` (-1:
    ``name`` could not be selected) in ``us``, and the interrupts each virtio device took."""

    name: str
    bytes: int
    us: int
    irqs: Mapping[str, int]


@dataclass(frozen=True)
class RngReport:
    """``rng``: every hwrng read in turn (PROTOCOL.md, "Device traffic")."""

    seq: int
    req: int
    devices: tuple[VirtioDevice, ...]
    reads: tuple[RngRead, ...]


@dataclass(frozen=True)
class Ok:
    """``ok``: reply to ``tbreset`` and to the load commands."""

    seq: int
    req: int


@dataclass(frozen=True)
class AgentError:
    """``error``: the agent refused a command (``req`` is -1 when it had no valid id)."""

    seq: int
    req: int
    error: str


AgentMessage = (Hello | CpuOnline | Busy | Tick | Probe | TbStats | TbWarp | IpiReport | Dlpar | RngReport
                | Ok | AgentError)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """The CPUs of a kernel CPU list such as ``"0-3,5"``, ascending; ValueError if malformed."""
    cpus: set[int] = set()
    for part in text.split(","):
        match = _CPU_LIST.fullmatch(part)
        if match is None:
            raise ValueError(f"not a CPU list: {text!r}")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise ValueError(f"not a CPU list (range {part} goes down): {text!r}")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


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


_Word = TypeVar("_Word", bound=str)


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

    def choice(self, key: str, allowed: tuple[_Word, ...]) -> _Word:
        value = self._get(key)
        for option in allowed:
            if value == option:
                return option
        raise self._bad(key, f"one of {', '.join(allowed)}")

    def cpu_list(self, key: str) -> str:
        value = self.text(key)
        try:
            parse_cpu_list(value)
        except ValueError:
            raise self._bad(key, "a CPU list like '0-1,3'") from None
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

    def names(self) -> tuple[str, ...]:
        return tuple(self._data)

    def str_map(self) -> dict[str, str]:
        """This object as a str -> str mapping (all keys read)."""
        return {key: self.text(key) for key in self._data}

    def done(self) -> None:
        """Refuse keys the protocol version does not define."""
        extra = sorted(set(self._data) - self._read)
        if extra:
            raise _Invalid(f"{self._kind} payload has unknown keys {extra}")


def _hello(p: _Payload, seq: int) -> Hello:
    agent = p.integer("agent")
    if agent != PROTOCOL_VERSION:
        # Before the other keys: they are what changes between versions.
        raise _Invalid(f"agent speaks protocol {agent}, harness {PROTOCOL_VERSION}")
    msg = Hello(seq, agent=agent, tb_freq=p.integer("tb_freq", 1), cpus=p.cpu_list("cpus"))
    p.done()
    return msg


def _cpu(p: _Payload, seq: int) -> CpuOnline:
    msg = CpuOnline(seq, cpu=p.integer("cpu"))
    p.done()
    return msg


def _busy(p: _Payload, seq: int) -> Busy:
    msg = Busy(
        seq, cpu=p.integer("cpu"), n=p.integer("n", 1), iter=p.integer("iter"), tb=p.integer("tb")
    )
    p.done()
    return msg


def _tick(p: _Payload, seq: int) -> Tick:
    msg = Tick(seq, cpu=p.integer("cpu"), n=p.integer("n", 1), tb=p.integer("tb"))
    p.done()
    return msg


def _thread(p: _Payload) -> ThreadPlacement:
    placement = ThreadPlacement(
        role=p.choice("role", THREAD_ROLES), cpu=p.integer("cpu"), ran_on=p.integer("ran_on", -1)
    )
    p.done()
    return placement


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
        cpus_present=p.text("cpus_present"),
        mem_total_kb=p.integer("mem_total_kb"),
        load=p.choice("load", LOAD_MODES),
        threads=tuple(_thread(t) for t in p.objs("threads")),
        pci=tuple(_pci(d) for d in p.objs("pci")),
        phb_ranges=MappingProxyType(p.obj("phb_ranges").str_map()),
    )
    p.done()
    return msg


def _cpu_tbstats(p: _Payload) -> CpuTbStats:
    stats = CpuTbStats(
        cpu=p.integer("cpu"),
        samples=p.integer("samples"),
        max_back=p.integer("max_back"),
        max_fwd=p.integer("max_fwd"),
        max_fwd_at=p.integer("max_fwd_at"),
        last=p.integer("last"),
        timer_wakeups=p.integer("timer_wakeups"),
    )
    p.done()
    return stats


def _tbstats(p: _Payload, seq: int) -> TbStats:
    msg = TbStats(seq, req=p.integer("req"), cpus=tuple(_cpu_tbstats(c) for c in p.objs("cpus")))
    p.done()
    cpus = [c.cpu for c in msg.cpus]
    if cpus != sorted(set(cpus)):
        raise _Invalid(f"tbstats cpus must be distinct and ascending, got {cpus}")
    return msg


def _cpu_warp(p: _Payload) -> CpuWarp:
    warp = CpuWarp(
        cpu=p.integer("cpu"),
        samples=p.integer("samples"),
        cross=p.integer("cross"),
        max_warp=p.integer("max_warp"),
        min_gap=p.integer("min_gap"),
        max_gap=p.integer("max_gap"),
    )
    p.done()
    if warp.cross > warp.samples:
        raise _Invalid(f"tbwarp cpu {warp.cpu}: {warp.cross} cross samples of {warp.samples}")
    return warp


def _tbwarp(p: _Payload, seq: int) -> TbWarp:
    msg = TbWarp(seq, req=p.integer("req"), window=p.integer("window", 1),
                 cpus=tuple(_cpu_warp(c) for c in p.objs("cpus")))
    p.done()
    cpus = [c.cpu for c in msg.cpus]
    if cpus != sorted(set(cpus)):
        raise _Invalid(f"tbwarp cpus must be distinct and ascending, got {cpus}")
    return msg


def _ipi_pair(p: _Payload) -> IpiPair:
    pair = IpiPair(from_cpu=p.integer("from"), to_cpu=p.integer("to"), ticks=p.integer("ticks", -1))
    p.done()
    if pair.from_cpu == pair.to_cpu:
        raise _Invalid(f"ipi pair from cpu {pair.from_cpu} to itself")
    return pair


def _ipi(p: _Payload, seq: int) -> IpiReport:
    msg = IpiReport(seq, req=p.integer("req"), pairs=tuple(_ipi_pair(x) for x in p.objs("pairs")))
    p.done()
    return msg


def _dlpar(p: _Payload, seq: int) -> Dlpar:
    msg = Dlpar(seq, drc=p.integer("drc"), action=p.choice("action", ("add", "remove", "unknown")),
                slot=p.text("slot"), failed=p.text("failed"), why=p.text("why"),
                tb_event=p.integer("tb_event"), tb_done=p.integer("tb_done"))
    p.done()
    return msg


def _rng_read(p: _Payload) -> RngRead:
    irqs = p.obj("irqs")
    read = RngRead(name=p.text("name"), bytes=p.integer("bytes", -1), us=p.integer("us"),
                   irqs=MappingProxyType({key: irqs.integer(key, 1) for key in irqs.names()}))
    irqs.done()
    p.done()
    return read


def _virtio(p: _Payload) -> VirtioDevice:
    dev = VirtioDevice(pci=p.text("pci"), virtio=p.text("virtio"))
    p.done()
    return dev


def _rng(p: _Payload, seq: int) -> RngReport:
    msg = RngReport(seq, req=p.integer("req"), devices=tuple(_virtio(d) for d in p.objs("devices")),
                    reads=tuple(_rng_read(r) for r in p.objs("reads")))
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
    "cpu": _cpu,
    "busy": _busy,
    "tick": _tick,
    "probe": _probe,
    "tbstats": _tbstats,
    "tbwarp": _tbwarp,
    "ipi": _ipi,
    "dlpar": _dlpar,
    "rng": _rng,
    "ok": _ok,
    "error": _error,
}
