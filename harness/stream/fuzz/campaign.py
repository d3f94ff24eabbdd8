"""A fuzzing campaign: worker processes, and a supervisor that survives them.

Workers run a contiguous range of inputs each (:mod:`.inputs`) and report
tallies about once a second, findings at once. The supervisor restarts a
worker that died (a segfault in a C extension) or is stuck (the watchdog
kills it) from its last report, skipping the input it was on, which it
makes again (inputs are a function of their number) as a finding.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized

from harness.stream.fuzz.inputs import Input, Plan, make_input
from harness.stream.fuzz.outcome import Feed, Kind, Outcome, died, examine
from harness.stream.fuzz.tally import Tally

_REPORT_S = 1.0


@dataclass(frozen=True)
class Finding:
    """A crash or hang, with the input that caused it."""

    input: Input
    outcome: Outcome


@dataclass
class _Worker:
    start: int  # first input not yet reported
    stop: int
    skip: set[int]
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    current: Synchronized[int]
    seen: tuple[int, float] = (-1, 0.0)  # the input it was on, and since when


def run(plan: Plan, jobs: int, limit_s: float, ceiling_mb: int, on_finding: Callable[[Finding], None],
        on_progress: Callable[[Tally], None]) -> Tally:
    """Run every input of ``plan`` in ``jobs`` worker processes; findings as they come."""
    ctx = multiprocessing.get_context("fork")
    total = Tally()
    step = -(-plan.count // jobs)
    workers = [_start(ctx, plan, n, min(n + step, plan.count), set(), limit_s, ceiling_mb)
               for n in range(0, plan.count, step)]
    watchdog_s = max(30.0, 10 * limit_s)
    last_progress = time.monotonic()

    def lost(w: _Worker, how: str) -> None:
        """A worker died or is stuck: its input is a finding, a new worker takes the rest."""
        w.process.kill()
        w.process.join()
        workers.remove(w)
        finding = _lost(plan, w, how)
        total.add(finding.input.origin, finding.outcome, finding.input.index)
        on_finding(finding)
        workers.append(_start(ctx, plan, w.start, w.stop, w.skip | {finding.input.index}, limit_s,
                              ceiling_mb))

    try:
        while workers:
            ready = multiprocessing.connection.wait([w.conn for w in workers], timeout=1.0)
            for w in list(workers):
                if w.conn in ready:
                    try:
                        kind, upto, payload = w.conn.recv()
                    except EOFError:
                        lost(w, "died")
                        continue
                    if kind == "finding":
                        on_finding(payload)
                        continue
                    total.merge(payload)
                    w.start = upto
                    if kind == "done":
                        w.process.join()
                        workers.remove(w)
                elif _stuck(w, watchdog_s):
                    lost(w, "stuck")
            if time.monotonic() - last_progress > 10:
                on_progress(total)
                last_progress = time.monotonic()
    except KeyboardInterrupt:
        for w in workers:
            w.process.kill()
        total.interrupted = True
    return total


def _start(ctx: multiprocessing.context.ForkContext, plan: Plan, start: int, stop: int, skip: set[int],
           limit_s: float, ceiling_mb: int) -> _Worker:
    current: Synchronized[int] = ctx.Value("q", start, lock=False)
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_work, args=(plan, start, stop, skip, child, current, limit_s, ceiling_mb),
                          daemon=True)
    process.start()
    child.close()
    return _Worker(start, stop, skip, process, parent, current)


def _stuck(w: _Worker, watchdog_s: float) -> bool:
    now = time.monotonic()
    if w.current.value != w.seen[0]:
        w.seen = (w.current.value, now)
        return False
    return now - w.seen[1] > watchdog_s


def _lost(plan: Plan, w: _Worker, how: str) -> Finding:
    """The finding for the input a worker died on (or was killed stuck on), made again here."""
    if how == "stuck":
        outcome = Outcome(Kind.HANG, "hang (killed by the watchdog)", "no progress; worker killed")
    else:
        outcome = died(w.process.exitcode)
    return Finding(make_input(plan, w.current.value), outcome)


def _work(plan: Plan, start: int, stop: int, skip: set[int], conn: multiprocessing.connection.Connection,
          current: Synchronized[int], limit_s: float, ceiling_mb: int) -> None:
    """A worker: inputs ``start`` to ``stop``, tallies about once a second, findings at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    _limit_memory(ceiling_mb)
    feed = Feed()
    tally = Tally()
    reported = time.monotonic()
    for index in range(start, stop):
        current.value = index
        if index in skip:  # it killed a worker before: counted by the supervisor
            continue
        item = make_input(plan, index)
        outcome = examine(item.data, feed, limit_s)
        tally.add(item.origin, outcome, index)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if rss > tally.peak_rss_kb:
            tally.peak_rss_kb, tally.peak_at = rss, index
        if outcome.kind in (Kind.CRASH, Kind.HANG):
            conn.send(("finding", index + 1, Finding(item, outcome)))
        if time.monotonic() - reported > _REPORT_S:
            conn.send(("tally", index + 1, tally))
            tally = Tally(peak_rss_kb=tally.peak_rss_kb, peak_at=tally.peak_at)
            reported = time.monotonic()
    conn.send(("done", stop, tally))
    feed.close()


def _limit_memory(ceiling_mb: int) -> None:
    """Address space: what the worker has now plus ``ceiling_mb``; beyond, MemoryError (a crash)."""
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = size + (ceiling_mb << 20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
