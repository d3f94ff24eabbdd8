"""The harness's own log of a cell (``harness.log``): what it did, step by step, beside QEMU's logs.

Loggers live under :data:`ROOT` (``goldmig.cell``, ``goldmig.qmp``, ``goldmig.migration``, ...).
:func:`cell_log` writes them to ``harness.log`` in the cell's run directory for the duration of
one cell, as QEMU's functional tests (``tests/functional/qemu_test``) write ``base.log``::

    2026-12-07 10:31:02.123 MainThread goldmig.migration INFO: hop src -> dst: migrate to unix:/tmp/...

Nothing goes to the console: no handler is installed outside a cell (no ``basicConfig``), and
inside one the goldmig records go to the file only, not to pytest's captured logs (a failed
cell's report would repeat its whole QMP conversation). A full disk loses lines, never the cell.

A cell's evidence ends in ``reports/runs/<slug>`` (:func:`evidence_dir`), ``harness.log`` with it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from harness.paths import reports_root

if TYPE_CHECKING:
    from harness.checks.verdict import CellVerdict

ROOT = "goldmig"
"""The logger every harness logger is a child of (``logging.getLogger("goldmig.<area>")``)."""
LOG_NAME = "harness.log"
FORMAT = "%(asctime)s.%(msecs)03d %(threadName)s %(name)s %(levelname)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
ABRIDGE_CHARS = 200
"""How much of a QMP argument list, reply or event a log line carries (the transcript has all)."""

_log = logging.getLogger(f"{ROOT}.cell")


class QuietFileHandler(logging.FileHandler):
    """A file handler that loses a record it cannot write (a full disk, a directory gone or
    read-only) without a traceback on stderr and without raising into the cell; ``lost``
    counts them. The file is opened at the first record and flushed after each one."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.lost = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)  # opening the file (delay) happens outside logging's own guard
        except OSError:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.lost += 1

    def close(self) -> None:
        try:
            super().close()  # flushes what is left: the disk may be full by now
        except OSError:
            self.lost += 1


@contextmanager
def cell_log(rundir: Path, cell_id: str) -> Iterator[Path]:
    """Write every ``goldmig.*`` record, DEBUG and up, to ``rundir/harness.log`` while the block
    runs; yields that path. The handler is removed and closed afterwards whatever happens, and
    the goldmig logger's level and propagation are put back as they were (a block inside another
    logs to both files). How the block ended is the last line (an exception: its type and
    message at INFO, its traceback at DEBUG); the exception itself goes on unchanged."""
    path = rundir / LOG_NAME
    handler = QuietFileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    root = logging.getLogger(ROOT)
    level, propagate = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False
    try:
        _log.info("cell %s starts (pid %d, run directory %s)", cell_id, os.getpid(), rundir)
        try:
            yield path
        except BaseException as exc:
            _log.info("cell %s ends: %s", cell_id, error_line(exc))
            _log.debug("what ended it:", exc_info=exc)
            raise
        _log.info("cell %s ends", cell_id)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        root.propagate = propagate
        handler.close()


def log_verdict(verdict: CellVerdict) -> None:
    """The cell's verdict and each check's, on ``goldmig.cell`` at INFO (a passed check at
    DEBUG): what the checks measured and which known_failures entry explained each."""
    reason = verdict.reason.splitlines()[0] if verdict.reason else ""
    _log.info("verdict: %s%s", verdict.outcome, f": {reason}" if reason else "")
    for v in verdict.checks:
        check = v.check
        by = (f", explained by {v.explained_by.key}" if v.explained_by is not None
              else ", unexplained" if check.counts_against else "")
        cause = f" (because of {check.cause})" if check.cause else ""
        _log.log(logging.DEBUG if not check.counts_against else logging.INFO,
                 "check %s: %s%s%s: %s", check.id, check.verdict.value, cause, by, abridged(check.after))


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the whole message is in the cell's report)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def abridged(value: object, limit: int = ABRIDGE_CHARS) -> str:
    """``value`` as JSON (a string as it is), cut to ``limit`` characters with the full length
    said: a log line never carries a whole ``query-migrate`` reply or memory map (nor spans
    lines: an HMP reply's line breaks are shown as ``\\n``)."""
    text = value.replace("\n", "\\n") if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def cell_slug(cell_id: str, attempt: int = 1) -> str:
    """The name of a cell's evidence directory: its id made a file name, ``#<attempt>`` after
    the first run of a cell run several times (``--repeat``)."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", cell_id)
    return slug if attempt == 1 else f"{slug}#{attempt}"


def evidence_dir(cell_id: str, attempt: int = 1, reports: Path | None = None) -> Path:
    """Where a cell's evidence is kept: ``<reports>/runs/<slug>`` (``reports``: the run's
    reports directory, :func:`harness.paths.reports_root` by default)."""
    return (reports if reports is not None else reports_root()) / "runs" / cell_slug(cell_id, attempt)
