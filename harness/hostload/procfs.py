"""What the kernel says about a thread's scheduling and the host's load: the text of /proc, parsed.

Pure functions over file contents (the readers fetch the text, locally or over SSH):

* ``/proc/<pid>/task/<tid>/schedstat``: ``<ran ns> <waited ns> <timeslices>``: time on a CPU,
  time spent runnable on a run queue but not running, and how many times the thread ran
  (Documentation/scheduler/sched-stats.rst, "/proc/<pid>/schedstat"). The second field is the
  one that matters here: the host kept the thread from running although it had work to do.
* ``/proc/<pid>/task/<tid>/status``: ``NSpid:`` lists the thread's id in each pid namespace it
  is in, outermost (ours) first, its own last (proc(5)); ``Tgid:`` its process.
* ``/proc/loadavg``: 1, 5, 15 minute load averages, then ``<runnable>/<threads>``.
* ``/proc/pressure/cpu`` (PSI, Documentation/accounting/psi.rst): ``some avg10=.. avg60=..
  avg300=.. total=<us>``: the share of time at least one task waited for a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedStat:
    """One thread's cumulative scheduling figures (since it started)."""

    ran_ns: int
    waited_ns: int
    """Runnable but waiting on a run queue for a CPU."""
    slices: int


@dataclass(frozen=True)
class HostLoad:
    """The host's load when a reading was taken."""

    load1: float
    """The 1-minute load average."""
    runnable: int
    """Threads runnable or running at that moment (``/proc/loadavg`` fourth field)."""
    cpus: int | None
    """Online CPUs of the host, None where that is not readable."""
    pressure_total_us: int | None
    """PSI ``cpu some total``: microseconds in which some task waited for a CPU; None without PSI."""

    def line(self) -> str:
        of = f" on {self.cpus} CPUs" if self.cpus else ""
        return f"load {self.load1:.1f}{of}, {self.runnable} runnable"


def parse_schedstat(text: str) -> SchedStat:
    """``"331366443 27799847 284\\n"`` -> SchedStat(331366443, 27799847, 284)."""
    fields = text.split()
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise ValueError(f"not a schedstat line: {text!r}")
    ran, waited, slices = map(int, fields)
    return SchedStat(ran, waited, slices)


def parse_nspid(status: str) -> tuple[int, ...]:
    """A task's ids from outermost pid namespace to its own (``NSpid:``; ``Pid:`` on kernels
    older than 4.1, which have no such line and no nesting to tell)."""
    fallback: tuple[int, ...] = ()
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "NSpid":
            return tuple(int(v) for v in value.split())
        if key == "Pid":
            fallback = (int(value),)
    if not fallback:
        raise ValueError("no NSpid or Pid line in a task status")
    return fallback


def parse_tgid(status: str) -> int:
    """The task's process (``Tgid:``) in the namespace the status was read in."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "Tgid":
            return int(value)
    raise ValueError("no Tgid line in a task status")


def parse_loadavg(text: str) -> tuple[float, int]:
    """``"3.91 1.20 0.50 5/123 4567"`` -> (3.91, 5): the 1-minute load and the runnable count."""
    fields = text.split()
    if len(fields) < 4 or "/" not in fields[3]:
        raise ValueError(f"not a loadavg line: {text!r}")
    return float(fields[0]), int(fields[3].split("/")[0])


def parse_pressure(text: str) -> int | None:
    """The ``some`` line's ``total=`` (microseconds) of /proc/pressure/cpu; None if absent."""
    for line in text.splitlines():
        kind, *fields = line.split()
        if kind != "some":
            continue
        for field in fields:
            name, _, value = field.partition("=")
            if name == "total":
                return int(value)
    return None


def parse_cpu_ranges(text: str) -> int:
    """How many CPUs ``/sys/devices/system/cpu/online`` lists (``"0-3,6"`` -> 5)."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def host_load(loadavg: str, pressure: str | None, cpus: int | None) -> HostLoad:
    """A :class:`HostLoad` from the texts of /proc/loadavg and /proc/pressure/cpu (if any)."""
    load1, runnable = parse_loadavg(loadavg)
    return HostLoad(load1, runnable, cpus, parse_pressure(pressure) if pressure else None)
