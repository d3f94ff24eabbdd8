"""Explain a cell's migrations from their streams: a summary of every recorded stream, and,
when a migration failed, a diff of what the two builds send on the cell's machine type."""

from __future__ import annotations

from pathlib import Path

from harness.builds.model import Build
from harness.errors import HarnessError
from harness.migration.run import STREAM_PREFIX
from harness.qemu.machine import MachineSetup
from harness.runner.roles import Hop
from harness.stream import StreamError, diff, summarise
from harness.stream.golden import stopped_machine
from harness.stream.recorder import record_stream


def recorded_streams(rundir: Path) -> list[Path]:
    """The cell's recorded streams, in the order they were made."""
    return sorted(rundir.glob(f"{STREAM_PREFIX}*.bin"), key=lambda p: p.stat().st_mtime)


def summarise_streams(rundir: Path) -> None:
    """``<stream>.summary.txt`` and ``.json`` beside each recorded stream; a broken stream's
    summary says where and why it could not be read."""
    for stream in recorded_streams(rundir):
        text = rundir / (stream.stem + ".summary.txt")
        try:
            summary = summarise(stream)
        except StreamError as exc:
            text.write_text(f"the recorded stream could not be read to the end: {exc}\n")
        else:
            text.write_text(summary.to_text())
            (rundir / (stream.stem + ".summary.json")).write_text(summary.to_json())


def diff_last_hop(rundir: Path, hop: Hop, builds: tuple[Build, Build], setup: MachineSetup) -> None:
    """After a failed migration ``hop`` between ``builds`` (sender, receiver), say what the
    receiving build cannot load.

    The recorded stream of a refused migration ends where the destination
    hung up, so it cannot be diffed to the end. Instead, both builds of the
    hop save a stopped machine with the cell's machine type and options
    (recorded once and cached), and those two complete streams are diffed.
    """
    stream = rundir / f"{STREAM_PREFIX}{hop.src}-{hop.dst}.bin"
    if not stream.exists():  # not recording
        return
    sender, receiver = builds
    out = rundir / (stream.stem + ".diff.txt")
    recipe = stopped_machine(setup)
    try:
        found = diff(record_stream(sender, recipe).path, record_stream(receiver, recipe).path)
    except HarnessError as exc:  # StreamError is one too
        out.write_text(f"no diff: {exc}\n")
        return
    out.write_text(f"{sender.name} (a) vs {receiver.name} (b), stopped {setup.machine_arg()}:\n"
                   + found.to_text())
