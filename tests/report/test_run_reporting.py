"""The end of a run, through pytester: outcome labels and run id in the Allure results, the
history appended, and what changed in the summary of the next run."""

from __future__ import annotations

import html
import json
import re
import textwrap
from pathlib import Path

import pytest

from harness.report.history import RUNS_FILE, read_runs
from harness.report.matrix_page import render
from harness.report.results import RUN_FILE, read_cells
from harness.report.run_summary import read_cells_json

pytest_plugins = ["pytester"]

MATRIX = textwrap.dedent("""
    builds:
      a: {kind: host}
      b: {kind: host}
    groups:
      - {name: g, builds: [a, b], machines: [pseries-7.2], scenarios: [baseline-idle]}
    selections:
      all: ["*"]
    default_selection: all
    known_failures:
      - {cells: "b>a/*", check: timebase-never-goes-backwards, match: "timebase",
         reason: "declared timebase bug", evidence: "a log"}
      - {cells: "b>b/*", check: online-cpus, match: "0-1", reason: "declared CPU bug", evidence: "a log"}
""")


def _body(failing: str) -> str:
    return textwrap.dedent(f"""
        from harness.checks.result import CheckResult
        from harness.errors import CheckFailed

        def test_cell(cell, cell_record):
            if cell.id.startswith("b>a"):
                raise CheckFailed("timebase never goes backwards", 0, 5, "watcher")
            if cell.id.startswith("{failing}"):
                raise CheckFailed("online CPUs", "0-1", "0", "probe")
            cell_record.checks.append(CheckResult("online CPUs", True, "0-1", "0-1", "probe"))
    """)


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reports")
    monkeypatch.setenv("GOLDMIG_REPORTS", str(path))
    return path


def _run(pytester: pytest.Pytester, failing: str, results: Path, *options: str) -> pytest.RunResult:
    pytester.makepyfile(test_cells=_body(failing))
    return pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--matrix",
                                         str(pytester.path / "matrix.yaml"), "--alluredir", str(results),
                                         "--clean-alluredir", *options)


def test_second_run_says_what_changed_and_results_carry_outcomes(pytester: pytest.Pytester,
                                                                 reports: Path) -> None:
    pytester.makefile(".yaml", matrix=MATRIX)
    results = pytester.path / "allure"
    first = _run(pytester, "a>b", results)
    first.stdout.fnmatch_lines(["what changed: nothing to compare with (no earlier run in the history)"])
    second = _run(pytester, "a>a", results)
    second.stdout.fnmatch_lines([
        "what changed since * UTC: 1 newly failing, 1 newly passing, 0 newly known, 0 flaky (4 cells "
        "compared)",
        "  newly failing a>a/pseries-7.2/baseline-idle  was passed, now failed: unexplained: online-cpus, *",
        "  newly passing a>b/pseries-7.2/baseline-idle  was failed, now passed",
    ])
    runs = read_runs(reports / "history" / RUNS_FILE)
    assert [r.cells["a>a/pseries-7.2/baseline-idle"][0] for r in runs] == ["passed", "failed"]
    assert json.loads((results / RUN_FILE).read_text())["run"] == runs[-1].run
    by_cell = {}
    for path in results.glob("*-result.json"):
        data = json.loads(path.read_text())
        by_cell[data["name"]] = data
    labels = {cell: {x["name"]: x["value"] for x in data["labels"]} for cell, data in by_cell.items()}
    assert labels["a>a/pseries-7.2/baseline-idle"]["outcome"] == "failed"
    assert labels["a>a/pseries-7.2/baseline-idle"]["failure"] == "Failed check: online-cpus"
    assert labels["b>a/pseries-7.2/baseline-idle"]["outcome"] == "known"
    assert labels["b>a/pseries-7.2/baseline-idle"]["failure"] == "Known: timebase-never-goes-backwards"
    assert labels["b>a/pseries-7.2/baseline-idle"]["entry"].startswith("b>a/* [")
    assert [c["explained_by"] for c in json.loads(labels["b>a/pseries-7.2/baseline-idle"]["checks"])] == [
        labels["b>a/pseries-7.2/baseline-idle"]["entry"][len("b>a/* ["):-1]] * 2
    assert by_cell["b>a/pseries-7.2/baseline-idle"]["statusDetails"]["known"] is True
    fixed = by_cell["b>b/pseries-7.2/baseline-idle"]  # its entry explained nothing: Allure's status is failed
    assert (fixed["status"], labels["b>b/pseries-7.2/baseline-idle"]["outcome"]) == ("failed", "fixed")
    assert fixed["statusDetails"]["message"].startswith(
        "known failure now passes: b>b/pseries-7.2/baseline-idle")
    cells = {c.cell: c for c in read_cells([results])}
    assert cells["b>b/pseries-7.2/baseline-idle"].outcome == "fixed"
    assert cells["a>a/pseries-7.2/baseline-idle"].reason.startswith(
        "unexplained: online-cpus, checks-after-the-failure (not measured, after online-cpus) — ")
    assert labels["a>b/pseries-7.2/baseline-idle"]["scenario"] == "baseline-idle"
    assert labels["a>b/pseries-7.2/baseline-idle"]["feature"] == "baseline"  # Allure's Behaviors tab
    assert labels["a>b/pseries-7.2/baseline-idle"]["story"] == "idle"
    params = by_cell["a>a/pseries-7.2/baseline-idle"]["parameters"]
    assert {"name": "cell", "value": "a>a/pseries-7.2/baseline-idle"} in params  # plain, counted for history
    failed_step = by_cell["a>a/pseries-7.2/baseline-idle"]["steps"][0]  # the body never booted a guest
    assert failed_step["status"] == "failed"
    assert "online CPUs" in failed_step["statusDetails"]["message"]


def test_the_matrix_page_of_a_parallel_run_says_what_its_summary_says(pytester: pytest.Pytester,
                                                                      reports: Path) -> None:
    """As the nightly runs (xdist workers write the results, the controller the summary): the fixed
    cell is FIXED? on the matrix page, and every square and the count line are the summary's."""
    pytester.makefile(".yaml", matrix=MATRIX)
    results = pytester.path / "allure"
    run = _run(pytester, "a>a", results, "-n", "2")
    head = next(line for line in run.stdout.lines if line.startswith("goldmig: 4 cells: "))
    assert head == "goldmig: 4 cells: 1 passed, 1 failed, 0 flaky, 1 known, 1 fixed, 0 broken, 0 skipped"
    page = html.unescape(render(read_cells([results]), None, "t"))
    assert f'<p id="summary"><b>{head}</b>' in page
    squares = dict(re.findall(r'data-cell="([^"]+)" data-outcome="(\w+)"', page))
    summary = {c.cell: c.outcome for c in read_cells_json(reports / "cells.json")}
    assert squares == summary
    assert summary["b>b/pseries-7.2/baseline-idle"] == "fixed"
