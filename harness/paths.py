"""Where goldmig keeps caches and run directories."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """The user's goldmig cache (``$XDG_CACHE_HOME/goldmig``), created on demand."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = base / "goldmig"
    root.mkdir(parents=True, exist_ok=True)
    return root


def reports_root() -> Path:
    """``reports/`` of this checkout, or ``$GOLDMIG_REPORTS`` when set."""
    return Path(os.environ.get("GOLDMIG_REPORTS") or REPO_ROOT / "reports")
