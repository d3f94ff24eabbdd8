"""``goldmig report [DIR...]``: build reports/html from the run's Allure results (or merge the
results directories named, e.g. shards'), print where it is and what changed, and serve it."""

from __future__ import annotations

from pathlib import Path

from harness.paths import reports_root
from harness.report.build import build_report, serve


def report(dirs: list[Path], out: Path | None, serve_it: bool, port: int) -> int:
    reports = reports_root()
    out = out or reports / "html"
    built = build_report(dirs or [reports / "allure-results"], out, reports / "history")
    print("\n".join(built.lines()), flush=True)
    if serve_it:
        serve(out, port)
    return 0
