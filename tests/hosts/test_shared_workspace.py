"""A host that shares this machine's file system: what it can be handed at its own path."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HostError
from harness.hosts.workspace import SharedWorkspace


def test_a_file_of_the_run_directory_or_a_readable_one_is_staged_where_it_is(tmp_path: Path) -> None:
    rundir, inputs = tmp_path / "run", tmp_path / "guest"
    ws = SharedWorkspace(rundir, [inputs])
    stream = rundir / "golden-qemu-10.0.bin"  # a stream made in the cell (goldenload, a rewind)
    assert ws.stage(stream) == stream
    assert ws.stage(inputs / "vmlinux") == inputs / "vmlinux"


def test_a_file_the_host_cannot_see_is_refused_naming_what_it_sees(tmp_path: Path) -> None:
    ws = SharedWorkspace(tmp_path / "run", [tmp_path / "guest"])
    with pytest.raises(HostError, match=r"elsewhere\.bin is not under a directory shared with the host"):
        ws.stage(tmp_path / "elsewhere.bin")
