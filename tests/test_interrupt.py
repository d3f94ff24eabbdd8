"""Ctrl-C or SIGTERM in the middle of a run leaves no QEMU behind.

A shell starts background jobs with SIGINT ignored, and Python keeps an ignored
SIGINT ignored, so a run started that way finishes instead of stopping. The run
under test gets the disposition a terminal's Ctrl-C meets: SIGINT at default.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def _qemu_children_of(pid: int) -> list[int]:
    """QEMU processes whose ancestry includes ``pid`` (bwrap wrappers included)."""
    parents: dict[int, int] = {}
    names: dict[int, bytes] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            names[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = []
    for child, cmdline in names.items():
        if b"qemu-system-ppc64" not in cmdline:
            continue
        ancestor = parents.get(child)
        while ancestor and ancestor != pid:
            ancestor = parents.get(ancestor)
        if ancestor == pid:
            found.append(child)
    return found


def _sigint_at_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_cell_reaps_every_qemu(tmp_path: Path, signum: int) -> None:
    env = {**os.environ, "GOLDMIG_REPORTS": str(tmp_path)}
    run = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--select", "smoke"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=_sigint_at_default,
    )
    deadline = time.monotonic() + 60
    while not _qemu_children_of(run.pid):
        assert run.poll() is None and time.monotonic() < deadline, "no QEMU was started"
        time.sleep(0.1)
    seen = _qemu_children_of(run.pid)
    run.send_signal(signum)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output.decode(errors="replace")[-2000:]
    time.sleep(0.5)
    assert [pid for pid in seen if Path(f"/proc/{pid}").exists()] == []
    assert list(Path(tempfile.gettempdir()).glob(f"gm-run-{run.pid}-*")) == []
