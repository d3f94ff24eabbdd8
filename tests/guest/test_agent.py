"""harness.guest.agent against a scripted agent behind a real console socket."""

from __future__ import annotations

import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.errors import GuestUnresponsive
from harness.guest.agent import Agent
from harness.guest.protocol import Busy, IpiPair, IpiReport, LoadMode, Tick
from harness.qemu.console import Console

Reply = Callable[[str, int], list[tuple[str, dict[str, object]]]]
"""What the scripted agent answers to ``<command> <id>``: (type, payload) lines."""


class ScriptedGuest:
    """Listens where QEMU's console socket would be; speaks the agent's side of the protocol."""

    def __init__(self, path: Path, reply: Reply, delay: float = 0.0) -> None:
        self.commands: list[str] = []
        self._reply = reply
        self._delay = delay
        self._seq = 0
        self._lock = threading.Lock()  # the agent writes whole lines, in seq order
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._conn: socket.socket | None = None
        self._accepted = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def say(self, kind: str, payload: dict[str, object]) -> None:
        self._accepted.wait(5)
        assert self._conn is not None
        text = json.dumps(payload, separators=(",", ":"))
        with self._lock:
            self._seq += 1
            crc = zlib.crc32(f"{kind} {self._seq} {text}".encode())
            self._conn.sendall(f"##GM {kind} {self._seq} {crc:08x} {text}\r\n".encode())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._server.close()

    def _serve(self) -> None:
        self._conn, _ = self._server.accept()
        self._accepted.set()
        try:
            for raw in self._conn.makefile("rb"):
                command, req = raw.decode().split()
                self.commands.append(command)
                time.sleep(self._delay)
                for kind, payload in self._reply(command, int(req)):
                    self.say(kind, payload)
        except OSError:
            return  # the harness side hung up (a test that expected no answer in time)


def answer_ok(command: str, req: int) -> list[tuple[str, dict[str, object]]]:
    if command.startswith("load") or command == "tbreset":
        return [("ok", {"req": req})]
    if command == "ipi":
        pairs = [{"from": 0, "to": 1, "ticks": 40000}, {"from": 1, "to": 0, "ticks": -1}]
        return [("ipi", {"req": req, "pairs": pairs})]
    return [("error", {"req": req, "error": f"unknown command '{command}'"})]


@pytest.fixture
def guest_and_agent(tmp_path: Path) -> Iterator[tuple[ScriptedGuest, Agent]]:
    guest = ScriptedGuest(tmp_path / "con", answer_ok)
    console = Console("src", tmp_path / "con")
    console.connect(lambda: True, 5)
    yield guest, Agent(console, timeout=2)
    console.close()
    guest.close()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition not met in 5 s"
        time.sleep(0.01)


class TestCpus:
    def test_online_cpus_are_the_announced_ones(
        self, guest_and_agent: tuple[ScriptedGuest, Agent]
    ) -> None:
        guest, agent = guest_and_agent
        assert agent.online_cpus() == ()
        for cpu in (0, 2, 1):  # 2 came first: it is how the agent announces a hotplug race
            guest.say("cpu", {"cpu": cpu})
        wait_until(lambda: len(agent.online_cpus()) == 3)
        assert agent.online_cpus() == (0, 1, 2)


class TestBeats:
    @pytest.fixture
    def beating(self, guest_and_agent: tuple[ScriptedGuest, Agent]) -> Agent:
        guest, agent = guest_and_agent
        guest.say("tick", {"cpu": 0, "n": 1, "tb": 10})
        guest.say("tick", {"cpu": 1, "n": 1, "tb": 11})
        guest.say("busy", {"cpu": 1, "n": 1, "iter": 100, "tb": 12})
        guest.say("tick", {"cpu": 0, "n": 2, "tb": 20})
        wait_until(lambda: len(agent.console.messages()) == 4)
        return agent

    def test_beats_of_one_cpu_in_order(self, beating: Agent) -> None:
        assert [t.n for t in beating.beats(Tick, 0)] == [1, 2]
        assert beating.beats(Tick, 1) == (Tick(seq=2, cpu=1, n=1, tb=11),)
        assert beating.beats(Busy, 0) == ()

    def test_latest_of_any_cpu_or_one(self, beating: Agent) -> None:
        assert beating.latest(Tick) == Tick(seq=4, cpu=0, n=2, tb=20)
        assert beating.latest(Tick, cpu=1) == Tick(seq=2, cpu=1, n=1, tb=11)
        assert beating.latest(Busy, cpu=0) is None
        assert beating.latest(Busy) == Busy(seq=3, cpu=1, n=1, iter=100, tb=12)

    def test_beat_after_counts_per_cpu(
        self, guest_and_agent: tuple[ScriptedGuest, Agent], beating: Agent
    ) -> None:
        guest, _ = guest_and_agent
        # cpu 0 is already at n=2; cpu 1's n=2 is still to come.
        threading.Timer(0.2, guest.say, ("tick", {"cpu": 1, "n": 2, "tb": 30})).start()
        assert beating.beat_after(Tick, 1, 5, cpu=1) == Tick(seq=5, cpu=1, n=2, tb=30)

    def test_no_beat_from_that_cpu(self, beating: Agent) -> None:
        with pytest.raises(GuestUnresponsive, match="no busy heartbeat from cpu 0 after #0"):
            beating.beat_after(Busy, 0, 0.2, cpu=0)


class TestRequests:
    @pytest.mark.parametrize("mode", ["idle", "busy", "timer"])
    def test_set_load(self, guest_and_agent: tuple[ScriptedGuest, Agent], mode: LoadMode) -> None:
        guest, agent = guest_and_agent
        agent.set_load(mode)
        assert guest.commands == [f"load{mode}"]

    def test_unknown_load_mode_is_not_sent(self, guest_and_agent: tuple[ScriptedGuest, Agent]) -> None:
        guest, agent = guest_and_agent
        with pytest.raises(ValueError, match="one of idle, busy, timer, got 'spin'"):
            agent.set_load("spin")  # type: ignore[arg-type]
        assert guest.commands == []

    def test_set_load_refused(self, tmp_path: Path) -> None:
        def refuse(command: str, req: int) -> list[tuple[str, dict[str, object]]]:
            why = "load busy not in effect after 5 s: cpu 1 busy thread"
            return [("error", {"req": req, "error": why})]

        guest = ScriptedGuest(tmp_path / "con", refuse)
        console = Console("src", tmp_path / "con")
        console.connect(lambda: True, 5)
        try:
            with pytest.raises(GuestUnresponsive, match="refused 'loadbusy': .* cpu 1 busy thread"):
                Agent(console).set_load("busy")
        finally:
            console.close()
            guest.close()

    def test_ipi(self, guest_and_agent: tuple[ScriptedGuest, Agent]) -> None:
        guest, agent = guest_and_agent
        report = agent.ipi()
        assert guest.commands == ["ipi"]
        assert isinstance(report, IpiReport)
        assert report.pairs == (IpiPair(0, 1, 40000), IpiPair(1, 0, -1))

    def test_ipi_waits_for_every_pair(self, tmp_path: Path) -> None:
        """An ipi reply may take a second per pair beyond the usual timeout."""
        guest = ScriptedGuest(tmp_path / "con", answer_ok, delay=0.6)
        console = Console("src", tmp_path / "con")
        console.connect(lambda: True, 5)
        try:
            guest.say("cpu", {"cpu": 0})
            guest.say("cpu", {"cpu": 1})
            agent = Agent(console, timeout=0.3)
            wait_until(lambda: agent.online_cpus() == (0, 1))
            assert len(agent.ipi().pairs) == 2
            with pytest.raises(GuestUnresponsive, match="no reply to 'tbreset'"):
                agent.tbreset()
        finally:
            console.close()
            guest.close()


def test_a_line_the_stop_cut_in_two_is_whole_on_the_destination(tmp_path: Path) -> None:
    """The source's console ends inside a line; the destination's starts with its rest: the line
    is the source's (the guest wrote it there), and the destination's lines after it are its own."""
    servers = []
    consoles = []
    for name in ("src", "dst"):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(tmp_path / name))
        server.listen(1)
        console = Console(name, tmp_path / name)
        console.connect(lambda: True, 5)
        servers.append(server.accept()[0])
        consoles.append(console)
    src, dst = consoles
    text = '{"cpu":0,"n":3,"tb":77}'
    line = f"##GM tick 9 {zlib.crc32(f'tick 9 {text}'.encode()):08x} {text}\r\n".encode()
    servers[0].sendall(line[:15])
    wait_until(lambda: src._pending == line[:15])
    dst.continue_from(src)
    text4 = '{"cpu":0,"n":4,"tb":77}'
    later = f"##GM tick 10 {zlib.crc32(f'tick 10 {text4}'.encode()):08x} {text4}\r\n".encode()
    servers[1].sendall(line[15:] + later)
    assert src.wait_for(Tick, lambda t: t.n == 3, 5) is not None
    assert dst.wait_for(Tick, lambda t: t.n == 4, 5) is not None
    assert [m.n for m in dst.messages() if isinstance(m, Tick)] == [4] and not dst.corrupt_lines
    assert dst.wait_for_either(src, Tick, lambda t: t.n == 3, 1) is not None
    for sock, console in zip(servers, consoles, strict=True):
        sock.close()
        console.close()
