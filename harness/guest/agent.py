"""The harness's side of the guest agent: requests and heartbeats over one console."""

from __future__ import annotations

import itertools
import logging
import time
from typing import TypeVar

from harness.errors import GuestUnresponsive
from harness.guest.protocol import (
    LOAD_MODES,
    AgentError,
    Busy,
    CpuOnline,
    Hello,
    IpiReport,
    LoadMode,
    Ok,
    Probe,
    RngReport,
    TbStats,
    TbWarp,
    Tick,
    encode_command,
)
from harness.qemu.console import Console

_log = logging.getLogger("goldmig.agent")
_request_ids = itertools.count(1)
R = TypeVar("R", Probe, TbStats, TbWarp, IpiReport, RngReport, Ok)
Beat = TypeVar("Beat", Busy, Tick)

TBWARP_S = 4.0
"""The longest a ``tbwarp`` may take in the agent: twice its rendezvous and sampling time."""
IPI_ANSWER_S = 1.0
"""How long the agent waits for one IPI round trip before reporting it lost (PROTOCOL.md)."""
RNG_READ_S = 2.0
"""How long the agent lets one /dev/hwrng read, or one selection, take before it goes on."""
RNG_DEVICES_MAX = 4
"""The most virtio-rng devices a guest has in any scenario: the wait for ``rng`` allows for them."""


class Agent:
    """Talks to the agent behind ``console`` (the source's, or after migration the destination's).

    What it knows of the guest comes from the messages on this console only:
    on a destination's console, the ``cpu`` announcements and beats from
    before the migration were on the source's.
    """

    def __init__(self, console: Console, timeout: float = 10.0) -> None:
        self.console = console
        self.timeout = timeout

    def hello(self, timeout: float) -> Hello:
        hello = self.console.wait_for(Hello, lambda _: True, timeout)
        _log.debug("%s: hello %s", self.console.name, "seen" if hello else "not seen")
        if hello is None:
            raise GuestUnresponsive(
                f"{self.console.name}: the guest agent did not start within {timeout}s "
                "(no hello on the console; see the serial log)"
            )
        return hello

    def probe(self) -> Probe:
        return self._request("probe", Probe)

    def tbstats(self) -> TbStats:
        return self._request("tbstats", TbStats)

    def tbwarp(self) -> TbWarp:
        """Every CPU's timebase against the others' (PROTOCOL.md, "Timebase across CPUs"); the
        agent answers within :data:`TBWARP_S` even when a CPU does not take part."""
        return self._request("tbwarp", TbWarp, self.timeout + TBWARP_S)

    def tbreset(self) -> None:
        self._request("tbreset", Ok)

    def set_load(self, mode: LoadMode) -> None:
        """Switch every CPU's load mode; returns once the agent says it is in effect."""
        if mode not in LOAD_MODES:  # our bug, not the guest's: no command for it
            raise ValueError(f"load mode must be one of {', '.join(LOAD_MODES)}, got {mode!r}")
        self._request(f"load{mode}", Ok)

    def ipi(self) -> IpiReport:
        """Round trips between every ordered pair of CPUs (lost ones have ``ticks == -1``).

        The agent measures the pairs one after another, each up to
        :data:`IPI_ANSWER_S`, so the wait allows for that on top of the usual
        timeout for the CPUs announced on this console.
        """
        cpus = len(self.online_cpus())
        return self._request("ipi", IpiReport, self.timeout + cpus * (cpus - 1) * IPI_ANSWER_S)

    def rng(self) -> RngReport:
        """Read every virtio-rng device in turn (PROTOCOL.md, "Device traffic"); each device's
        selection and its read take at most :data:`RNG_READ_S` each in the agent, and so does
        putting the selection back."""
        return self._request("rng", RngReport,
                             self.timeout + (2 * RNG_DEVICES_MAX + 1) * RNG_READ_S)

    def online_cpus(self) -> tuple[int, ...]:
        """The CPUs the agent announced (``cpu`` messages) on this console, ascending."""
        return tuple(sorted({m.cpu for m in self.console.messages() if isinstance(m, CpuOnline)}))

    def beats(self, kind: type[Beat], cpu: int) -> tuple[Beat, ...]:
        """Every ``kind`` heartbeat of ``cpu`` seen so far, in order."""
        return tuple(m for m in self.console.messages() if isinstance(m, kind) and m.cpu == cpu)

    def latest(self, kind: type[Beat], cpu: int | None = None) -> Beat | None:
        """The last ``kind`` heartbeat seen, of ``cpu`` or of any CPU when None."""
        for message in reversed(self.console.messages()):
            if isinstance(message, kind) and cpu in (None, message.cpu):
                return message
        return None

    def beat_after(self, kind: type[Beat], after: int, timeout: float, *, cpu: int) -> Beat:
        """The first ``kind`` heartbeat of ``cpu`` numbered above ``after``."""
        beat = self.console.wait_for(kind, lambda b: b.cpu == cpu and b.n > after, timeout)
        _log.debug("%s: %s of cpu %d after #%d: %s", self.console.name, kind.__name__.lower(), cpu,
                   after, f"#{beat.n}" if beat else "none")
        if beat is None:
            raise GuestUnresponsive(
                f"{self.console.name}: no {kind.__name__.lower()} heartbeat from cpu {cpu} "
                f"after #{after} within {timeout}s"
            )
        return beat

    def _request(self, command: str, reply: type[R], timeout: float | None = None) -> R:
        req = next(_request_ids)
        wait = self.timeout if timeout is None else timeout
        sent = time.monotonic()
        _log.debug("%s -> %s (request %d)", self.console.name, command, req)
        self.console.send(encode_command(command, req))
        answer = self.console.wait_for(
            (reply, AgentError), lambda m: m.req == req, wait  # type: ignore[arg-type]
        )
        _log.debug("%s <- %s: %s in %.1f ms", self.console.name, command,
                   type(answer).__name__ if answer else "nothing", (time.monotonic() - sent) * 1000)
        if answer is None:
            raise GuestUnresponsive(
                f"{self.console.name}: no reply to {command!r} (request {req}) within {wait}s"
            )
        if isinstance(answer, AgentError):
            raise GuestUnresponsive(f"{self.console.name}: agent refused {command!r}: {answer.error}")
        assert isinstance(answer, reply)
        return answer
