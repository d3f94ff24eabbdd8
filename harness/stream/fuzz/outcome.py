"""One input through the parser and the summariser, and what came of it.

The contract under test (:mod:`harness.stream`): on any input, iterating the
records and summarising (then rendering, as ``goldmig show`` does) either
succeed or raise :class:`~harness.stream.errors.StreamError` naming an
offset inside the input, the part being read and a reason; nothing else
escapes, and it is over within the time limit. The record pass reads
through the smallest mmap window and the summary through the default one,
so that their agreement (same outcome, same offset, same reason) also
checks the decoders' window moves, which small inputs would otherwise
never make.
Anything else is a crash, identified by the place it was raised (its
*site*) so that one bug found a thousand times is reported once.
"""

from __future__ import annotations

import enum
import mmap
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType, TracebackType
from typing import BinaryIO

from harness.stream.errors import StreamError
from harness.stream.parser import StreamParser
from harness.stream.reader import open_stream
from harness.stream.summary import summarise

_HARNESS = Path(__file__).resolve().parents[2]
_FUZZ = Path(__file__).resolve().parent


class Kind(enum.Enum):
    OK = "ok"
    ERROR = "stream-error"  # the parser's own refusal, at an offset inside the input
    CRASH = "crash"  # any other exception, a StreamError without a sensible offset, disagreement
    HANG = "hang"  # over the time limit


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    site: str = ""  # crash or hang: where (the key findings are deduplicated by)
    detail: str = ""  # the StreamError's reason, or the exception
    offset: int | None = None
    trace: str = ""
    seconds: float = 0.0


class Hang(BaseException):
    """Raised by the time limit's timer; a BaseException so no ``except Exception`` swallows it."""


class Feed:
    """One memory-backed file, rewritten for each input: a real file to map, no disk."""

    def __init__(self) -> None:
        self._fd = os.memfd_create("goldmig-fuzz")
        self.file: BinaryIO = os.fdopen(self._fd, "rb", buffering=0)

    def load(self, data: bytes) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        self.file.close()


def examine(data: bytes, feed: Feed, limit_s: float) -> Outcome:
    """Parse and summarise ``data`` within ``limit_s`` seconds of CPU time; classify what happened.

    CPU time, not wall time: on a busy machine (QEMU runs beside the
    benchmark) a descheduled worker is not a hang. A wait that uses no CPU
    is the campaign watchdog's to catch.
    """
    feed.load(data)
    previous = signal.signal(signal.SIGPROF, _alarm)
    start = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, limit_s)
    try:
        parsed = _attempt(_parse, feed.file, len(data))
        summarised = _attempt(_summarise, feed.file, len(data))
    except Hang as exc:
        return Outcome(Kind.HANG, "hang " + _where(exc.__traceback__, line=False), f"over {limit_s} s",
                       trace=_trace(exc), seconds=time.process_time() - start)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    seconds = time.process_time() - start
    if seconds > limit_s:  # the alarm came while C code ran and was handled too late
        return Outcome(Kind.HANG, "hang (in C code)", f"{seconds:.2f} s of CPU", seconds=seconds)
    outcome = _combine(parsed, summarised)
    return Outcome(outcome.kind, outcome.site, outcome.detail, outcome.offset, outcome.trace, seconds)


def died(exitcode: int | None) -> Outcome:
    """A process that ran :func:`examine` ended without an answer (a crash in C code)."""
    cause = f"signal {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0 \
        else f"exit {exitcode}"
    return Outcome(Kind.CRASH, f"worker died ({cause})", f"the worker process died: {cause}")


def examine_isolated(data: bytes, limit_s: float) -> Outcome:
    """:func:`examine` in a forked process, so that a crash in C code is an answer too."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_examine_to, args=(data, limit_s, child), daemon=True)
    process.start()
    child.close()
    try:
        if parent.poll(max(30.0, 10 * limit_s)):
            outcome: Outcome = parent.recv()
            return outcome
        process.kill()
        return Outcome(Kind.HANG, "hang (killed by the watchdog)", "no answer; process killed")
    except EOFError:
        process.join()
        return died(process.exitcode)
    finally:
        process.join()
        parent.close()


def _examine_to(data: bytes, limit_s: float, conn: Connection) -> None:
    feed = Feed()
    conn.send(examine(data, feed, limit_s))
    feed.close()


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang()


def _parse(file: BinaryIO) -> None:
    """Every record, through the smallest reader window: the window moves even in a small input."""
    with open_stream(file, window=mmap.ALLOCATIONGRANULARITY) as reader:
        for _ in StreamParser(reader).records():
            pass


def _summarise(file: BinaryIO) -> None:
    summary = summarise(file)
    summary.to_text()
    summary.to_json(indent=None)  # the C encoder: what indent=1 accepts, faster


def _attempt(step: Callable[[BinaryIO], None], file: BinaryIO, size: int) -> Outcome:
    try:
        step(file)
    except StreamError as exc:
        if not 0 <= exc.offset <= size or not exc.reason or not exc.section:
            return Outcome(Kind.CRASH, f"StreamError offset outside the input {_where(exc.__traceback__)}",
                           f"offset {exc.offset} of {size} bytes: {exc}", exc.offset, _trace(exc))
        return Outcome(Kind.ERROR, detail=exc.reason, offset=exc.offset)
    except Exception as exc:
        return Outcome(Kind.CRASH, f"{type(exc).__name__} {_where(exc.__traceback__)}",
                       f"{type(exc).__name__}: {exc}"[:500], trace=_trace(exc))
    return Outcome(Kind.OK)


def _combine(parsed: Outcome, summarised: Outcome) -> Outcome:
    for outcome in (parsed, summarised):
        if outcome.kind is Kind.CRASH:
            return outcome
    if (parsed.kind, parsed.offset, parsed.detail) != (summarised.kind, summarised.offset, summarised.detail):
        return Outcome(Kind.CRASH, "parser and summariser disagree",
                       f"parser: {parsed.kind.value} {parsed.offset} {parsed.detail!r}; summariser: "
                       f"{summarised.kind.value} {summarised.offset} {summarised.detail!r}")
    return parsed


def _where(tb: TracebackType | None, line: bool = True) -> str:
    """The innermost frame in goldmig's code (not this package): ``path:line in function``.

    Without ``line`` (a hang: where the alarm found it varies within a loop),
    only the path and function.
    """
    frames = [(f, Path(f.filename).resolve()) for f in traceback.extract_tb(tb)]
    outside = [(f, p) for f, p in frames if not p.is_relative_to(_FUZZ)]
    inner = [(f, p) for f, p in outside if p.is_relative_to(_HARNESS)] or outside or frames
    if not inner:
        return "at an unknown place"
    frame, path = inner[-1]
    name = str(path.relative_to(_HARNESS.parent)) if path.is_relative_to(_HARNESS) else frame.filename
    return f"at {name}{f':{frame.lineno}' if line else ''} in {frame.name}"


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
