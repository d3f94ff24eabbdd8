"""Both drivers' sides implement the one :class:`harness.runner.side.Side` protocol, neither by
inheriting the other: the direct driver's QemuProcess and the libvirt driver's LibvirtSide share
functions (harness/qemu/process.py), not a class. mypy checks the types on the package; this
checks, structurally, that each class has every member, and what the shared functions do."""

from __future__ import annotations

import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol, cast

import pytest

from harness.builds.model import Build
from harness.errors import HarnessError, QemuCrashed, QemuUnresponsive
from harness.hosts.base import Host
from harness.hosts.workspace import Workspace
from harness.libvirt.daemon import LibvirtDaemon
from harness.libvirt.side import LibvirtSide
from harness.qemu.argv import SidePaths
from harness.qemu.monitor import Monitor
from harness.qemu.process import (
    PING_S,
    QemuProcess,
    State,
    enable_traces,
    hang_check,
    lists_memory_device,
    require_new,
)
from harness.runner.side import Side

BUILD = cast(Build, SimpleNamespace(name="qemu-10.0"))
HOST = cast(Host, object())
WORKSPACE = cast(Workspace, object())


def protocol_members(proto: type) -> set[str]:
    """typing.get_protocol_members (Python 3.13); before it, the protocol's annotations and
    what its class body defines beyond what any protocol class has."""
    get = getattr(typing, "get_protocol_members", None)
    if get is not None:
        return set(get(proto))

    class Empty(Protocol): ...

    defined = set(vars(proto)) - set(vars(Empty)) - {"__annotations__"}
    return set(vars(proto).get("__annotations__", {})) | defined


def qemu_process(paths: SidePaths) -> QemuProcess:
    return QemuProcess("src", HOST, BUILD, ["qemu-system-ppc64"], paths, WORKSPACE)


def libvirt_side(paths: SidePaths) -> LibvirtSide:
    daemon = cast(LibvirtDaemon, SimpleNamespace(qemu_log=lambda name: ""))
    return LibvirtSide("dst", HOST, BUILD, paths, WORKSPACE, daemon, "gm-x", "<domain/>")


@pytest.fixture
def paths(tmp_path: Path) -> SidePaths:
    return SidePaths.for_role(tmp_path, "side")


class FakeMonitor(Monitor):
    """QMP without QEMU: canned replies, every command kept."""

    def __init__(self, replies: dict[str, Any] | None = None, connected: bool = True,
                 raises: Exception | None = None) -> None:
        super().__init__("src", Path("/nonexistent"), Path("/nonexistent"))
        self.replies = replies or {}
        self.sent: list[tuple[str, float, dict[str, Any]]] = []
        self._connected = connected
        self._raises = raises

    @property
    def connected(self) -> bool:
        return self._connected

    def cmd(self, command: str, timeout: float = 30.0, **args: Any) -> Any:
        self.sent.append((command, timeout, args))
        if self._raises is not None:
            raise self._raises
        return self.replies.get(command, {})


class FakeSide:
    """What hang_check asks of a side, set by each test."""

    def __init__(self, monitor: Monitor, state: State = State.RUNNING, alive: bool = True,
                 lost: QemuCrashed | None = None) -> None:
        self.role = "src"
        self.build = BUILD
        self.state = state
        self.monitor = monitor
        self._alive = alive
        self._lost = lost

    def alive(self) -> bool:
        return self._alive

    def lost(self) -> QemuCrashed | None:
        return self._lost


class TestBothImplementSide:
    def test_the_protocol_s_members_are_found(self) -> None:
        members = protocol_members(Side)
        assert {"role", "argv", "monitor", "console", "start", "exitcode", "trace", "has_dimm",
                "__enter__", "__exit__"} <= members

    @pytest.mark.parametrize("make", [qemu_process, libvirt_side], ids=["QemuProcess", "LibvirtSide"])
    def test_a_side_has_every_member(self, make: Any, paths: SidePaths) -> None:
        side = make(paths)
        missing = sorted(m for m in protocol_members(Side) if not hasattr(side, m))
        assert missing == []
        for name in protocol_members(Side):
            declared = vars(Side).get(name)
            if isinstance(declared, property):
                assert isinstance(getattr(type(side), name), property), name
            elif callable(declared):
                assert callable(getattr(side, name)), name

    def test_libvirt_side_is_not_a_qemu_process(self) -> None:
        assert not issubclass(LibvirtSide, QemuProcess)
        assert not issubclass(QemuProcess, LibvirtSide)

    def test_libvirt_side_has_no_command_line_of_ours(self, paths: SidePaths) -> None:
        side = libvirt_side(paths)
        assert side.argv == []  # the host-load meter knows a libvirt-started QEMU by it
        assert side.state is State.NEW

    @pytest.mark.parametrize("make", [qemu_process, libvirt_side], ids=["QemuProcess", "LibvirtSide"])
    def test_leaving_the_context_stops_a_side(self, make: Any, paths: SidePaths) -> None:
        with make(paths) as side:
            assert side.state is State.NEW
        assert side.state is State.STOPPED

    def test_a_destination_still_to_arrive_keeps_its_traces_for_its_command_line(
            self, paths: SidePaths) -> None:
        side = libvirt_side(paths)
        side.trace(("spapr_drc_set_*",))
        assert side.traced == ("spapr_drc_set_*",)


class TestRequireNew:
    def test_a_new_side_may_start(self) -> None:
        require_new("src", State.NEW)

    @pytest.mark.parametrize("state", [State.RUNNING, State.STOPPED])
    def test_starting_twice_names_the_state(self, state: State) -> None:
        with pytest.raises(HarnessError, match=f"src: start\\(\\) called in state {state.value}"):
            require_new("src", state)


class TestEnableTraces:
    def test_one_command_per_pattern_in_order(self) -> None:
        monitor = FakeMonitor()
        enable_traces(monitor, ("spapr_drc_*", "migrate_*"))
        assert monitor.sent == [
            ("trace-event-set-state", 30.0, {"name": "spapr_drc_*", "enable": True}),
            ("trace-event-set-state", 30.0, {"name": "migrate_*", "enable": True}),
        ]

    def test_no_pattern_no_command(self) -> None:
        monitor = FakeMonitor()
        enable_traces(monitor, ())
        assert monitor.sent == []


class TestListsMemoryDevice:
    DEVICES = [
        {"type": "dimm", "data": {"id": "ua-hotplug-dimm", "size": 268435456}},
        {"type": "virtio-mem", "data": {"memdev": "/objects/m1"}},  # no id: not a match
    ]

    def test_a_listed_id_is_found(self) -> None:
        monitor = FakeMonitor({"query-memory-devices": self.DEVICES})
        assert lists_memory_device(monitor, "ua-hotplug-dimm")
        assert [c for c, _, _ in monitor.sent] == ["query-memory-devices"]

    def test_an_id_is_matched_exactly(self) -> None:
        monitor = FakeMonitor({"query-memory-devices": self.DEVICES})
        assert not lists_memory_device(monitor, "hotplug-dimm")

    def test_no_devices(self) -> None:
        assert not lists_memory_device(FakeMonitor({"query-memory-devices": []}), "hotplug-dimm")


class TestHangCheck:
    @pytest.mark.parametrize("state", [State.NEW, State.STOPPED])
    def test_a_side_not_running_is_not_asked(self, state: State) -> None:
        monitor = FakeMonitor()
        assert hang_check(FakeSide(monitor, state=state)) is None
        assert monitor.sent == []

    def test_a_side_without_its_monitor_is_not_asked(self) -> None:
        monitor = FakeMonitor(connected=False)
        assert hang_check(FakeSide(monitor)) is None
        assert monitor.sent == []

    def test_a_dead_qemu_is_the_side_s_loss(self) -> None:
        crash = QemuCrashed("src QEMU (qemu-10.0) was killed by signal 9 (SIGKILL)")
        monitor = FakeMonitor()
        assert hang_check(FakeSide(monitor, alive=False, lost=crash)) is crash
        assert monitor.sent == []

    def test_a_qemu_that_answers_is_not_blamed(self) -> None:
        monitor = FakeMonitor({"query-status": {"status": "running"}})
        assert hang_check(FakeSide(monitor)) is None
        assert monitor.sent == [("query-status", PING_S, {})]

    def test_a_qemu_that_does_not_answer_hangs(self) -> None:
        monitor = FakeMonitor(raises=QemuUnresponsive("query-status got no answer in 3.0s"))
        error = hang_check(FakeSide(monitor))
        assert isinstance(error, QemuUnresponsive)
        assert str(error) == ("src QEMU (qemu-10.0) hangs: the guest was silent and "
                              "query-status got no answer in 3.0s")

    def test_a_qemu_process_s_console_asks_it(self, paths: SidePaths) -> None:
        qemu = qemu_process(paths)
        qemu.monitor = FakeMonitor()
        qemu.state = State.RUNNING
        qemu.alive = lambda: True  # type: ignore[method-assign]
        assert qemu.console._on_quiet() is None
        assert qemu.monitor.sent == [("query-status", PING_S, {})]

    def test_a_libvirt_side_s_console_asks_nothing(self, paths: SidePaths) -> None:
        side = libvirt_side(paths)
        side.monitor = FakeMonitor()
        side.state = State.RUNNING
        assert side.console._on_quiet() is None
        assert side.monitor.sent == []
