"""The harness's side of the guest agent: requests and heartbeats over one console."""

from __future__ import annotations

import itertools
from typing import TypeVar

from harness.errors import GuestUnresponsive
from harness.guest.protocol import (
    AgentError,
    Busy,
    Hello,
    Ok,
    Probe,
    TbStats,
    Tick,
    encode_command,
)
from harness.qemu.console import Console

_request_ids = itertools.count(1)
R = TypeVar("R", Probe, TbStats, Ok)
Beat = TypeVar("Beat", Busy, Tick)


class Agent:
    """Talks to the agent behind ``console`` (the source's, or after migration the destination's)."""

    def __init__(self, console: Console, timeout: float = 10.0) -> None:
        self.console = console
        self.timeout = timeout

    def hello(self, timeout: float) -> Hello:
        hello = self.console.wait_for(Hello, lambda _: True, timeout)
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

    def tbreset(self) -> None:
        self._request("tbreset", Ok)

    def latest(self, kind: type[Beat]) -> Beat | None:
        beats = [m for m in self.console.messages() if isinstance(m, kind)]
        return beats[-1] if beats else None

    def beat_after(self, kind: type[Beat], after: int, timeout: float) -> Beat:
        """The first ``kind`` heartbeat numbered above ``after``."""
        beat = self.console.wait_for(kind, lambda b: b.n > after, timeout)
        if beat is None:
            raise GuestUnresponsive(
                f"{self.console.name}: no {kind.__name__.lower()} heartbeat after #{after} "
                f"within {timeout}s"
            )
        return beat

    def _request(self, command: str, reply: type[R]) -> R:
        req = next(_request_ids)
        self.console.send(encode_command(command, req))
        answer = self.console.wait_for(
            (reply, AgentError), lambda m: m.req == req, self.timeout  # type: ignore[arg-type]
        )
        if answer is None:
            raise GuestUnresponsive(
                f"{self.console.name}: no reply to {command!r} (request {req}) "
                f"within {self.timeout}s"
            )
        if isinstance(answer, AgentError):
            raise GuestUnresponsive(f"{self.console.name}: agent refused {command!r}: {answer.error}")
        assert isinstance(answer, reply)
        return answer
