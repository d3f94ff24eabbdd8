"""How long a QEMU's vCPU threads waited for a host CPU during a window of the scenario.

Attach a meter to a running QEMU once, open a window before what a check times, close it after::

    meter = StarvationMeter.attach(dst)
    window = meter.start()
    ...                                 # the migration, waiting for the ticks
    reading = window.stop()             # a frozen Starvation
    reading.starvation_ms(cpu=0)        # what judge() takes as its excuse
    reading.describe()                  # one line of evidence

Attaching asks QEMU for its vCPU threads (QMP ``query-cpus-fast``, ``thread-id``) and finds them
where QEMU runs (see :func:`reader_for`); windows only read the kernel's counters, no QMP, so
opening and closing one costs well under a millisecond on this machine (measured: 0.6-0.9 ms
for both ends, local and namespace hosts; about 60 ms over SSH on a loaded machine).

When a wait counts: the kernel adds a thread's wait to its figures when the wait ends, as the
thread gets a CPU, so a wait is in the window in which it ends. A window closed just after the
vCPU did what was timed (a tick or a beat arrived: the vCPU ran to make it) holds every wait
before it; a wait still going on when the window closes (a CPU that never ticks) is not in it,
and judge() excuses nothing there anyway. A wait going on when the window opens counts whole:
open it when the vCPU last ran (right after the last tick seen) to keep the excuse tight.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.hostload.errors import HostLoadError
from harness.hostload.local import LocalReader
from harness.hostload.procfs import HostLoad
from harness.hostload.remote import SshReader
from harness.hostload.sample import Sample, ThreadReader
from harness.hosts.local import LocalHost
from harness.hosts.ssh import SshHost

if TYPE_CHECKING:
    from harness.runner.side import Side

NS_PER_MS = 1_000_000


def reader_for(process: Side) -> ThreadReader:
    """How to read ``process``'s threads: this machine's /proc for a local host and for a
    namespace host (an SSH host in a build root of this machine: same kernel, the sandbox's pid
    namespace mapped with NSpid), over SSH for a host with a kernel of its own (lab hosts)."""
    host = process.host
    if isinstance(host, LocalHost):
        return LocalReader(process.argv, host.name)
    if isinstance(host, SshHost):
        if host.target.root is not None:
            return LocalReader(process.argv, f"{host.name} (a namespace of this machine)")
        return SshReader(host)
    raise HostLoadError(f"{process.role}: cannot read the threads of a QEMU on a "
                        f"{type(host).__name__} host ({host.name})")


@dataclass(frozen=True)
class ThreadWait:
    """One QEMU thread during a window."""

    thread_id: int
    """As QEMU reports it (in its own pid namespace)."""
    waited_ms: float | None
    """Runnable but not running; None if the thread could not be read at an end of the window."""
    ran_ms: float | None


@dataclass(frozen=True)
class CpuWait:
    cpu: int
    """The vCPU's ``cpu-index``."""
    thread: ThreadWait


@dataclass(frozen=True)
class Starvation:
    """What the host did to one QEMU during one window."""

    role: str
    where: str
    wall_ms: float
    cpus: tuple[CpuWait, ...]
    main: ThreadWait
    """QEMU's main loop thread: under TCG it runs the timers that raise the guest's interrupts."""
    load: HostLoad
    """At the end of the window."""
    pressure_pct: float | None
    """Share of the window in which some task on the host waited for a CPU (PSI); None without."""
    cost_ms: float
    """What reading the figures cost, both ends together."""

    def waited_ms(self, cpu: int) -> float | None:
        """How long ``cpu``'s vCPU thread waited for a host CPU; None if not measured."""
        return next((c.thread.waited_ms for c in self.cpus if c.cpu == cpu), None)

    def starvation_ms(self, cpu: int) -> float | None:
        """How late the host can have made ``cpu`` in this window: its vCPU thread's wait (what
        :func:`~harness.hostload.judge.judge` takes); None if not measured.

        The main loop's wait is not added. Under TCG it runs the timers that raise the guest's
        interrupts, so it can make a tick late too; but during a migration it also runs the
        incoming side, and its waits there lengthen the downtime QEMU reports, which the bounds
        already allow for: adding it would excuse them twice. :attr:`main` is in the evidence."""
        return self.waited_ms(cpu)

    def describe(self) -> str:
        """One line of evidence: every CPU's wait, the main loop's, the window and the load."""
        def ms(value: float | None) -> str:
            return "?" if value is None else f"{value:.0f} ms"

        waits = ", ".join(f"CPU {c.cpu} {ms(c.thread.waited_ms)}" for c in self.cpus) or "no CPU"
        pressure = "" if self.pressure_pct is None else f", CPU pressure {self.pressure_pct:.0f}%"
        return (f"{self.role} on {self.where}: {waits} (main loop {ms(self.main.waited_ms)}) "
                f"waited for a host CPU in a {self.wall_ms:.0f} ms window; "
                f"{self.load.line()}{pressure}")


def starvation_ms(readings: Iterable[Starvation], cpu: int) -> float | None:
    """``cpu``'s starvation over several windows that together cover what was timed (the
    source's and the destination's around a migration): the sum of those measured, None if none
    was."""
    measured = [s for r in readings if (s := r.starvation_ms(cpu)) is not None]
    return sum(measured) if measured else None


class WindowState(enum.Enum):
    OPEN = "open"
    STOPPED = "stopped"


class StarvationMeter:
    """Measures, window by window, how long one QEMU's vCPU threads waited for a host CPU."""

    def __init__(self, process: Side, reader: ThreadReader) -> None:
        self.role = process.role
        self.reader = reader
        self._process = process
        self.threads: dict[int, int] = {}
        """cpu-index -> thread id (QEMU's), as of the last :meth:`refresh`."""
        self.attach_cost_ms = 0.0

    @classmethod
    def attach(cls, process: Side) -> StarvationMeter:
        """A meter on ``process`` (running: it answers QMP), its vCPU threads found."""
        began = time.monotonic()
        if not process.argv:  # libvirt's QEMU: no command line of ours to find it by
            raise HostLoadError(f"{process.role}: a QEMU started by libvirt; its threads are not read")
        meter = cls(process, reader_for(process))
        meter.refresh()
        meter.attach_cost_ms = (time.monotonic() - began) * 1000
        return meter

    def refresh(self) -> None:
        """Ask QEMU for its vCPUs again (after a CPU hotplug) and track new threads.

        Windows never do this themselves: a CPU plugged after the last refresh has no figures
        (its starvation is None, which excuses nothing)."""
        cpus = self._process.monitor.cmd("query-cpus-fast")
        self.threads = {int(c["cpu-index"]): int(c["thread-id"]) for c in cpus}
        self.reader.track(set(self.threads.values()))

    def sample(self) -> Sample:
        """The tracked threads' cumulative figures now."""
        return self.reader.read()

    def start(self) -> Window:
        """Open a window now."""
        return Window(self, dict(self.threads), self.sample())

    def measure(self, first: Sample, last: Sample, threads: dict[int, int]) -> Starvation:
        """The reading between two samples of this meter."""
        def wait(tid: int) -> ThreadWait:
            a, b = first.threads.get(tid), last.threads.get(tid)
            if a is None or b is None:
                return ThreadWait(tid, None, None)
            return ThreadWait(tid, (b.waited_ns - a.waited_ns) / NS_PER_MS,
                              (b.ran_ns - a.ran_ns) / NS_PER_MS)

        wall_ms = (last.at - first.at) * 1000
        p0, p1 = first.load.pressure_total_us, last.load.pressure_total_us
        pressure = (None if p0 is None or p1 is None or wall_ms <= 0
                    else min(100.0, (p1 - p0) / 10 / wall_ms))
        return Starvation(
            role=self.role, where=self.reader.where, wall_ms=wall_ms,
            cpus=tuple(CpuWait(cpu, wait(tid)) for cpu, tid in sorted(threads.items())),
            main=wait(self.reader.main_thread), load=last.load, pressure_pct=pressure,
            cost_ms=(first.cost_s + last.cost_s) * 1000,
        )


class Window:
    """An open window of a :class:`StarvationMeter`; :meth:`stop` closes it, once (also a
    context manager: the reading is :attr:`reading` after the block)."""

    def __init__(self, meter: StarvationMeter, threads: dict[int, int], first: Sample) -> None:
        self.meter = meter
        self.state = WindowState.OPEN
        self._threads = threads
        self._first = first
        self._reading: Starvation | None = None

    def stop(self) -> Starvation:
        """Close the window: what the host did to the QEMU since :meth:`StarvationMeter.start`."""
        if self.state is not WindowState.OPEN:
            raise HostLoadError(f"{self.meter.role}: Window.stop() called in state {self.state.value}")
        self.state = WindowState.STOPPED
        self._reading = self.meter.measure(self._first, self.meter.sample(), self._threads)
        return self._reading

    def so_far(self) -> Starvation:
        """What the host did to the QEMU since the window opened, the window left open."""
        if self.state is not WindowState.OPEN:
            raise HostLoadError(f"{self.meter.role}: Window.so_far() called in state {self.state.value}")
        return self.meter.measure(self._first, self.meter.sample(), self._threads)

    @property
    def reading(self) -> Starvation:
        if self._reading is None:
            raise HostLoadError(f"{self.meter.role}: Window.reading read in state {self.state.value}")
        return self._reading

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.state is WindowState.OPEN:
            self.stop()
