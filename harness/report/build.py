"""Build the HTML report: Allure 3 over one or more results directories (shards merge), with
history, categories, the matrix view beside it and what changed since the previous run.

Allure's overview ring counts Allure statuses (a known failure is skipped, a FIXED? cell failed),
not goldmig's outcomes; the overview says so and gives goldmig's counts twice: in Allure's own
Variables block (the config's ``variables``, :func:`overview_variables`) and in a goldmig bar on
top of every page, which also links the matrix view.

A per-patch job's results hold its comparison with the base (``patch.json``,
:mod:`harness.report.patch_page`): the report then writes ``patch.html`` and opens on the
breaks, fixes and flaky checks in the goldmig bar.

Allure appends each report's results to ``reports/history/allure-history.jsonl``
(its ``historyPath``): a cell's page shows its past runs and the overview a
trend. Building the report of the same results again does not append them
twice (``allure-appended.txt`` remembers which runs are in).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from html import escape
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.report.categories import categories
from harness.report.checklist import states
from harness.report.history import RUNS_FILE, Changes, read_runs, what_changed
from harness.report.matrix_page import RING, Ring, changes_html, headline, render, ring_note
from harness.report.patch_page import PATCH_PAGE, Patch, bar_html, read_patch
from harness.report.patch_page import render as render_patch
from harness.report.results import RUN_FILE, CellResult, ReportError, read_cells
from harness.report.run_summary import OUTCOMES
from harness.report.tool import allure_command

ALLURE_HISTORY = "allure-history.jsonl"
APPENDED = "allure-appended.txt"
HISTORY_RUNS = 100
"""Runs Allure keeps in its history (each report reads it all)."""
MATRIX_PAGE = "matrix.html"
HIDDEN_LABELS = ["thread", "framework", "language", "package"]
"""Labels allure-pytest adds that say nothing about a cell."""
_ANALYTICS = re.compile(r'\s*<script async src="https://www\.googletagmanager\.com/.*?</script>\s*<script>.*?'
                        r"</script>", re.S)
ALLURE_TIMEOUT_S = 600
RING_VARIABLE = "Allure's ring"
"""The overview variable that says what the ring's rate divides."""


@dataclass(frozen=True)
class Built:
    index: Path
    matrix: Path
    cells: list[CellResult]
    changes: Changes | None
    seconds: float
    allure_seconds: float
    patch: Path | None = None
    """patch.html, for a per-patch job's results."""

    def lines(self) -> list[str]:
        return [f"goldmig report: {_shown(self.index)}, {len(self.cells)} cells; matrix view "
                f"{_shown(self.matrix)}; built in {self.seconds:.1f} s (Allure {self.allure_seconds:.1f} s)",
                f"  {headline(self.cells)}; Allure's ring {Ring.of(self.cells).rate()}",
                "  " + (self.changes.headline() if self.changes else "what changed: the results carry no run "
                        "id (made before goldmig recorded one)")] + (
                [f"  the candidate against its base: {_shown(self.patch)}"] if self.patch else [])


def _shown(path: Path) -> Path:
    """Relative to the working directory when inside it (``make run`` prints reports/html/...)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def build_report(results: list[Path], out: Path, history: Path) -> Built:
    """Build ``out`` (index.html, matrix.html and, for a per-patch job, patch.html) from
    ``results``; history lives in ``history``."""
    started = time.monotonic()
    cells = read_cells(results)
    patch = read_patch(results)
    runs = [_run_of(d) for d in results]
    known_runs = [r for r in runs if r is not None]
    changes = _changes(cells, known_runs, history)
    labels = {r.get("label", "") for r in known_runs} - {""}
    merged = f"{len(results)} results directories merged" if len(results) > 1 else ""
    title = f"goldmig: {labels.pop() if len(labels) == 1 else merged}".removesuffix(": ")
    _clear(out)
    history.mkdir(parents=True, exist_ok=True)
    key = ",".join(sorted(r["run"] for r in known_runs))
    appended = history / APPENDED
    already = key and appended.exists() and key in appended.read_text().splitlines()
    config = {
        "name": title, "output": str(out), "historyPath": str(history / ALLURE_HISTORY),
        "appendHistory": not already, "historyLimit": HISTORY_RUNS, "hideLabels": HIDDEN_LABELS,
        "categories": categories(cells), "variables": overview_variables(cells),
        "plugins": {"awesome": {"options": {"reportName": title, "groupBy": ["parentSuite", "suite"]}}},
    }
    allure_started = time.monotonic()
    _generate(config, results)
    allure_seconds = time.monotonic() - allure_started
    if key and not already:
        with appended.open("a") as file:
            file.write(key + "\n")
    index = out / "index.html"
    _decorate(index, changes, headline(cells), ring_note(cells), bar_html(patch) if patch else "")
    matrix = out / MATRIX_PAGE
    matrix.write_text(render(cells, changes, title))
    page = _write_patch(out, patch, title)
    return Built(index, matrix, cells, changes, time.monotonic() - started, allure_seconds, page)


def _write_patch(out: Path, patch: Patch | None, title: str) -> Path | None:
    """patch.html, when the results hold a per-patch job's comparison."""
    if patch is None:
        return None
    page = out / PATCH_PAGE
    page.write_text(render_patch(patch, title))
    return page


def overview_variables(cells: list[CellResult]) -> dict[str, str]:
    """Allure's report variables, shown on its overview: goldmig's outcome counts in the run
    summary's words and order (``goldmig known: 214``), and the statuses the ring's rate divides.
    Eight, the most the overview shows before its "show more"; short values (longer ones are cut
    with an ellipsis)."""
    counts = Counter(c.outcome for c in cells)
    variables = {f"goldmig {o}": str(counts.get(o, 0)) for o in OUTCOMES}
    variables[RING_VARIABLE] = f"{RING[0]} / ({' + '.join(RING)})"  # passed / (passed + failed + broken)
    return variables


def _run_of(results: Path) -> dict[str, str] | None:
    path = results / RUN_FILE
    if not path.exists():
        return None
    try:
        return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except ValueError as exc:
        raise ReportError(f"{path}: unreadable ({exc}); delete it to report these results without "
                          "comparing them with the history") from exc


def _changes(cells: list[CellResult], runs: list[dict[str, str]], history: Path) -> Changes | None:
    """The cells against the runs before these results' own (None: no run id to place them)."""
    if not runs:
        return None
    ids = {r["run"] for r in runs}
    first = min(r["finished"] for r in runs)
    earlier = [e for e in read_runs(history / RUNS_FILE) if e.run not in ids and e.finished < first]
    checks = {c.cell: states(c.latest.checks) for c in cells if c.latest.checks}
    return what_changed({c.cell: (c.outcome, c.reason) for c in cells}, earlier, checks)


def _clear(out: Path) -> None:
    """Empty the output directory, refusing one that is not a report."""
    if out.exists():
        if any(out.iterdir()) and not (out / "index.html").exists():
            raise ReportError(f"{out}: exists and is not a report (no index.html); choose another --out "
                              "or empty it")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)


def _generate(config: dict[str, Any], results: list[Path]) -> None:
    with tempfile.TemporaryDirectory(prefix="goldmig-allure-") as tmp:
        rc = Path(tmp) / "allurerc.json"
        rc.write_text(json.dumps(config))
        command = [*allure_command(), "generate", "--config", str(rc), *(str(r) for r in results)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=ALLURE_TIMEOUT_S, cwd=tmp,
                                  env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": tmp})
        except subprocess.TimeoutExpired as exc:
            raise ReportError(f"Allure took more than {ALLURE_TIMEOUT_S} s to build "
                              f"{config['output']}") from exc
    if done.returncode != 0 or not (Path(config["output"]) / "index.html").exists():
        said = (done.stderr.strip() or done.stdout.strip())[-2000:] or "(nothing)"
        raise ReportError(f"Allure failed to build {config['output']} (exit {done.returncode}): {said}")


def _decorate(index: Path, changes: Changes | None, summary: str, ring: str, patch: str = "") -> None:
    """Drop Allure's Google Analytics tag and put a goldmig bar on top: a link to the matrix view,
    goldmig's counts as the run's summary gives them, what Allure's ring counts against them, and
    what changed since the previous run; ``patch`` (:func:`bar_html`) opens it on a per-patch
    job's comparison with the base, linked to patch.html."""
    html = _ANALYTICS.sub("", index.read_text())
    if "<body>" not in html:
        raise ReportError(f"{index}: Allure wrote no <body>; the report cannot be linked to the matrix view")
    changed = escape(changes.headline()) if changes else "what changed: unknown (no run id)"
    bar = ('<div id="goldmig-bar" style="font:13px/1.5 system-ui,sans-serif;padding:6px 16px;'
           'background:#1f2937;color:#f9fafb"><div><b>goldmig</b> · '
           f'<a id="goldmig-matrix-link" href="{MATRIX_PAGE}" style="color:#93c5fd">matrix view</a> · '
           + (f'<a id="goldmig-patch-link" href="{PATCH_PAGE}" style="color:#93c5fd">candidate against '
              "base</a> · " if patch else "")
           + f'<b id="goldmig-summary">{escape(summary)}</b> (the run\'s summary)</div>{patch}'
           f'<div id="goldmig-ring" style="color:#d1d5db">{escape(ring)}</div>'
           '<details><summary style="cursor:pointer">'
           f'{changed}</summary><div style="background:#fff;color:#1f2937;padding:4px 12px">'
           f"{changes_html(changes)}</div></details></div>")
    index.write_text(html.replace("<body>", "<body>\n" + bar, 1))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def serve(directory: Path, port: int) -> None:
    """Serve the report on 127.0.0.1 until Ctrl-C or SIGTERM (port 0: any free port)."""
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), partial(_Quiet, directory=str(directory)))
    except OSError as exc:
        raise ReportError(f"cannot serve {directory} on 127.0.0.1:{port} ({exc.strerror}); pass --port N "
                          "(0 picks a free one)") from exc
    with server:
        print(f"goldmig report: serving {directory} at http://127.0.0.1:{server.server_port}/ "
              "(Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
