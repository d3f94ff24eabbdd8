"""goldmig report: Allure 3 over results directories, history appended once, the matrix beside it."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from harness.report.build import ALLURE_HISTORY, build_report
from harness.report.history import RUNS_FILE, RunEntry, append_run
from harness.report.results import RUN_FILE, ReportError
from harness.report.run_summary import CellOutcome, summary_lines
from harness.report.tool import allure_command, pinned_version


def _results(directory: Path, run: str, finished: str, cells: dict[str, str],
             verdicts: dict[str, str] | None = None) -> Path:
    """One result per cell with its Allure status (and goldmig's verdict label, if given)."""
    directory.mkdir(parents=True)
    for n, (cell, status) in enumerate(cells.items()):
        message = "harness.errors.CheckFailed: online CPUs: before='0-1' after='0'\nevidence: probe"
        verdict = [{"name": "verdict", "value": verdicts[cell]}] if verdicts and cell in verdicts else []
        (directory / f"{run}-{n}-result.json").write_text(json.dumps({
            "uuid": f"{run}-{n}", "name": cell, "fullName": "suite.test_migration#test_cell",
            "testCaseId": "c4d92f75493eac008b33dd5f142ecc6d", "status": status, "start": 1000 * n,
            "stop": 1000 * n + 500, "parameters": [{"name": "cell", "value": cell}],
            "statusDetails": {"message": message} if status == "failed" else {},
            "labels": [{"name": "outcome", "value": status},
                       {"name": "parentSuite", "value": "baseline-idle"}, *verdict]}))
    (directory / RUN_FILE).write_text(json.dumps({"run": run, "finished": finished, "label": "test"}))
    return directory


def test_report_with_history_matrix_and_what_changed(tmp_path: Path) -> None:
    history = tmp_path / "history"
    append_run(history / RUNS_FILE, RunEntry("r1", "2026-11-28T01:00:00+00:00", "test",
                                             {"a>b/pseries-7.2/baseline-idle": ("passed", "")}))
    results = _results(tmp_path / "results", "r2", "2026-11-29T01:00:00+00:00",
                       {"a>b/pseries-7.2/baseline-idle": "failed", "b>a/pseries-7.2/baseline-idle": "passed"})
    built = build_report([results], tmp_path / "html", history)
    assert built.changes is not None
    assert [(c.cell, c.kind) for c in built.changes.changes] == [
        ("a>b/pseries-7.2/baseline-idle", "newly failing")]
    index = built.index.read_text()
    assert 'id="goldmig-matrix-link" href="matrix.html"' in index
    assert "1 newly failing" in index
    assert "googletagmanager" not in index
    assert 'data-cell="a&gt;b/pseries-7.2/baseline-idle" data-outcome="failed"' in built.matrix.read_text()
    assert (tmp_path / "html" / "data" / "test-results").is_dir()
    build_report([results], tmp_path / "html", history)  # the same results again: no second history point
    assert len((history / ALLURE_HISTORY).read_text().splitlines()) == 1


def test_the_overview_gives_goldmig_s_counts_and_says_what_allure_s_ring_counts(tmp_path: Path) -> None:
    cells = {"a>a/m/baseline-idle": "passed", "a>b/m/baseline-idle": "failed",
             "b>a/m/baseline-idle": "skipped", "b>b/m/baseline-idle": "skipped"}
    results = _results(tmp_path / "results", "r", "2026-12-07T01:00:00+00:00", cells,
                       {"a>b/m/baseline-idle": "fixed", "b>a/m/baseline-idle": "known"})
    built = build_report([results], tmp_path / "html", tmp_path / "history")
    head = summary_lines([CellOutcome(c, o) for c, o in [("a>a/m/baseline-idle", "passed"),
                                                          ("a>b/m/baseline-idle", "fixed"),
                                                          ("b>a/m/baseline-idle", "known"),
                                                          ("b>b/m/baseline-idle", "skipped")]])[0]
    assert head == "goldmig: 4 cells: 1 passed, 0 failed, 0 flaky, 1 known, 1 fixed, 0 broken, 1 skipped"
    variables = json.loads((tmp_path / "html" / "widgets" / "variables.json").read_text())  # Allure's own
    assert variables == {"goldmig passed": "1", "goldmig failed": "0", "goldmig flaky": "0",
                         "goldmig known": "1", "goldmig fixed": "1", "goldmig broken": "0",
                         "goldmig skipped": "1", "Allure's ring": "passed / (passed + failed + broken)"}
    pie = json.loads((tmp_path / "html" / "widgets" / "pie_chart.json").read_text())
    assert pie["percentage"] == 50  # the ring: 1 passed / (1 passed + 1 failed: the FIXED? cell)
    index = html.unescape(built.index.read_text())
    assert f'<b id="goldmig-summary">{head}</b>' in index
    assert ("Allure's overview ring is passed / (passed + failed + broken) = 1 / (1 + 1 + 0) = 50 %, "
            "over each cell's latest result by Allure status: 1 passed (1 PASS); 1 failed (1 FIXED?); "
            "2 skipped (1 KNOWN, 1 SKIP), not in its rate.") in index
    matrix = html.unescape(built.matrix.read_text())
    assert f'<p id="summary"><b>{head}</b>' in matrix
    assert built.lines()[1] == f"  {head}; Allure's ring 1 / (1 + 1 + 0) = 50 %"  # what `goldmig report` says
    assert 'data-cell="a>b/m/baseline-idle" data-outcome="fixed"' in matrix


def test_shards_merge_into_one_report(tmp_path: Path) -> None:
    one = _results(tmp_path / "one", "s1", "2026-11-29T01:00:00+00:00", {"a>b/m/baseline-idle": "passed"})
    two = _results(tmp_path / "two", "s2", "2026-11-29T01:00:00+00:00", {"b>a/m/baseline-idle": "failed"})
    built = build_report([one, two], tmp_path / "html", tmp_path / "history")
    assert [c.cell for c in built.cells] == ["a>b/m/baseline-idle", "b>a/m/baseline-idle"]
    summary = json.loads((tmp_path / "html" / "summary.json").read_text())
    assert summary["stats"]["total"] == 2


def test_an_output_directory_that_is_not_a_report_is_left_alone(tmp_path: Path) -> None:
    results = _results(tmp_path / "results", "r", "2026-11-29T01:00:00+00:00", {"a>b/m/s": "passed"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ReportError, match="mine: exists and is not a report"):
        build_report([results], tmp_path / "mine", tmp_path / "history")
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_missing_or_other_allure_says_make_allure(tmp_path: Path) -> None:
    missing = f"{tmp_path}: Allure {pinned_version()} is not installed there; run `make allure`"
    with pytest.raises(ReportError, match=missing):
        allure_command(tmp_path)
    package = tmp_path / "node_modules" / "allure" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text('{"version": "3.0.0"}')
    with pytest.raises(ReportError, match=f"Allure 3.0.0 is installed but .* pins {pinned_version()}; run "):
        allure_command(tmp_path)
