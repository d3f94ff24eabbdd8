"""steps.probe_after, the probe intc, hotplug and xiveblocks take right after a migration:
a short timeout while a CPU is stalled, and None then (never otherwise) when the guest is silent.
No QEMU here: the agent's requests are answered, or not, by a stand-in."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from harness.errors import GuestUnresponsive
from harness.guest.agent import Agent
from harness.guest.protocol import Probe
from harness.scenarios.steps import PROBE_STALLED_S, Asker, probe_after

PROBE = Probe(seq=1, req=1, tb=512_000_000, tb_freq=512_000_000, uptime="5.00", intc="XIVE",
              intc_names=("XIVE-IRQ",), cpus_online="0", cpus_present="0", mem_total_kb=480000,
              load="idle", threads=(), pci=(), phb_ranges={})
DST: Any = SimpleNamespace(console=SimpleNamespace(name="dst"))


@dataclasses.dataclass
class Guest:
    """Answers the probe or stays silent; records how long each request was given."""

    answers: bool
    waits: list[float] = dataclasses.field(default_factory=list)

    def request(self, agent: Agent, command: str, reply: type, timeout: float | None = None) -> Probe:
        self.waits.append(agent.timeout if timeout is None else timeout)
        if not self.answers:
            raise GuestUnresponsive(f"dst: no reply to {command!r}")
        return PROBE


def _guest(monkeypatch: pytest.MonkeyPatch, answers: bool) -> Guest:
    guest = Guest(answers)
    monkeypatch.setattr(Agent, "_request", lambda agent, *a, **k: guest.request(agent, *a, **k))
    return guest


@pytest.mark.parametrize(("stalled", "wait"), [(False, 10.0), (True, PROBE_STALLED_S)])
def test_the_probe_answered(monkeypatch: pytest.MonkeyPatch, stalled: bool, wait: float) -> None:
    guest = _guest(monkeypatch, answers=True)
    assert probe_after(DST, stalled) == (PROBE, "")
    assert guest.waits == [wait]


def test_a_stalled_guest_that_is_silent_leaves_the_probe_none_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    guest = _guest(monkeypatch, answers=False)
    assert probe_after(DST, stalled=True) == (None, "dst: no reply to 'probe'")
    assert guest.waits == [PROBE_STALLED_S] == [3.0]


def test_an_asker_given_that_silence_asks_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    guest = _guest(monkeypatch, answers=True)
    ask = Asker(Agent(DST.console), "dst: no reply to 'probe'")
    assert ask(Agent.probe) is None
    assert guest.waits == [] and ask.silence == "dst: no reply to 'probe'"


def test_a_silent_guest_with_no_cpu_stalled_is_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    guest = _guest(monkeypatch, answers=False)
    with pytest.raises(GuestUnresponsive, match="no reply to 'probe'"):
        probe_after(DST, stalled=False)
    assert guest.waits == [10.0]
