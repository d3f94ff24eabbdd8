"""Keep a cell's evidence in reports/: the small files first, a recorded stream only if it fits.

A full reports filesystem must cost at most the large files: every small
file (logs, transcripts, summaries) is kept before any stream, a stream is
kept only if the filesystem keeps :data:`RESERVE_BYTES` free afterwards (room
for the other cells' logs and the run's reports), and whatever could not be
kept is said in ``evidence-not-kept.txt`` and in the cell's report. Nothing
here raises: the cell keeps its real outcome.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from harness.migration.run import STREAM_PREFIX

RESERVE_BYTES = 64 << 20
NOT_KEPT = "evidence-not-kept.txt"


def keep_evidence(rundir: Path, evidence: Path, keep_stream: bool) -> list[str]:
    """Move the cell's files from ``rundir`` to ``evidence`` and remove ``rundir``; returns a
    note for each file that was not kept (and why)."""
    notes: list[str] = []
    try:
        shutil.rmtree(evidence, ignore_errors=True)
        evidence.mkdir(parents=True, exist_ok=True)
        files = [p for p in rundir.iterdir() if p.is_file() and not p.is_socket()]
        streams = [p for p in files if _is_stream(p)]
        for item in sorted(set(files) - set(streams), key=lambda p: p.stat().st_size):
            _move(item, evidence, notes)
        for stream in streams if keep_stream else ():
            size = stream.stat().st_size
            free = shutil.disk_usage(evidence).free
            if free - size < RESERVE_BYTES:
                notes.append(f"{stream.name} ({size} bytes) not kept: {free} bytes free on the reports "
                             f"filesystem, and {RESERVE_BYTES} must stay free for the run's reports")
            else:
                _move(stream, evidence, notes)
    except OSError as exc:
        notes.append(f"evidence directory {evidence}: {exc}")
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    if notes:
        try:
            (evidence / NOT_KEPT).write_text("\n".join(notes) + "\n")
        except OSError as exc:
            notes.append(f"{NOT_KEPT} itself could not be written: {exc}")
    return notes


def _is_stream(path: Path) -> bool:
    return path.name.startswith(STREAM_PREFIX) and path.suffix == ".bin"


def _move(item: Path, evidence: Path, notes: list[str]) -> None:
    target = evidence / item.name
    try:
        shutil.move(str(item), target)
    except OSError as exc:
        target.unlink(missing_ok=True)  # a partial copy is worse than none
        full = exc.errno == errno.ENOSPC
        notes.append(f"{item.name} ({item.stat().st_size if item.exists() else '?'} bytes) not kept: "
                     + ("the reports filesystem is full" if full else str(exc)))
