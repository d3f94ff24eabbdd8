"""Cell run directories in /tmp, named by the process that owns them.

Unix socket paths must stay short (108 bytes), so cells run in /tmp and move
their evidence to reports/ afterwards. A run killed outright cannot clean up;
its directories carry its pid, and the next run removes those whose owner is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from harness.hosts.setns import pid_alive

_OWNED = re.compile(r"^gm-run-(\d+)-")


def make_rundir() -> Path:
    """A new, empty run directory owned by this process."""
    return Path(tempfile.mkdtemp(prefix=f"gm-run-{os.getpid()}-"))


def sweep_stale_rundirs() -> list[Path]:
    """Remove run directories whose owning process no longer exists; return them."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob("gm-run-*"):
        match = _OWNED.match(path.name)
        if match and not pid_alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
