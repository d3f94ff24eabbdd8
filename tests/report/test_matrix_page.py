"""The matrix view: a grid per scenario and machine type, squares by outcome, linked to Allure."""

from __future__ import annotations

import re

from harness.report.history import Change, Changes
from harness.report.matrix_page import render
from harness.report.results import CellResult, RunResult


def _cell(cell: str, *outcomes: str, reason: str = "") -> CellResult:
    runs = tuple(RunResult(cell, o, reason, "", f"id-{cell}-{n}", n) for n, o in enumerate(outcomes))
    return CellResult(cell, runs)


def test_one_grid_per_scenario_and_machine_with_builds_in_version_order() -> None:
    page = render([_cell("qemu-10.0>qemu-7.2/pseries-7.2/baseline-idle", "failed",
                         reason="MigrationFailed: cpu/slb"),
                   _cell("qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle", "passed"),
                   _cell("qemu-7.2>qemu-7.2/pseries-7.2/pingpong", "passed", "failed"),
                   _cell("qemu-5.2>qemu-7.2/pseries-2.7/baseline-idle", "skipped")], None, "goldmig nightly")
    grids = re.findall(r'data-scenario="([^"]+)" data-machine="([^"]+)"', page)
    assert grids == [("baseline-idle", "pseries-2.7"), ("baseline-idle", "pseries-7.2"),
                     ("pingpong", "pseries-7.2")]
    header = re.search(r'data-machine="pseries-7.2"><tr><th class="corner">[^<]*</th>(.*?)</tr>', page)
    assert header is not None
    columns = re.findall(r"<th scope=\"col\">([^<]+)</th>", header.group(1))
    assert columns == ["qemu-5.2", "qemu-7.2", "qemu-10.0"]
    failed = re.search(r'<td class="o-failed" data-cell="qemu-10.0&gt;qemu-7.2/pseries-7.2/baseline-idle" '
                       r'data-outcome="failed" title="([^"]+)"><a href="index.html#/([^"]+)">FAIL</a>', page)
    assert failed is not None
    assert failed.groups() == ("qemu-10.0&gt;qemu-7.2/pseries-7.2/baseline-idle: FAIL — "
                               "MigrationFailed: cpu/slb",
                               "id-qemu-10.0>qemu-7.2/pseries-7.2/baseline-idle-0")
    assert 'data-outcome="flaky"' in page  # pingpong: passed then failed
    assert '<td class="o-none" title="not in this run">' in page


def test_what_changed_is_listed_on_the_page() -> None:
    changes = Changes((Change("a>b/m/s", "newly failing", "failed", "passed", "CheckFailed: x"),), 3, 0,
                      "2026-11-29T01:00:00+00:00")
    page = render([_cell("a>b/m/s", "failed")], changes, "t")
    assert ('<li data-change="newly failing" data-cell="a&gt;b/m/s"><b>newly failing</b> a&gt;b/m/s: '
            "was passed, now failed — CheckFailed: x</li>") in page


def test_the_legend_counts_goldmigs_outcomes_and_the_ring_allures_statuses() -> None:
    def cell(name: str, outcome: str, status: str) -> CellResult:
        return CellResult(name, (RunResult(name, outcome, "", "", f"id-{name}", 1, status),))

    cells = [cell("a>a/m/s", "passed", "passed"), cell("a>b/m/s", "fixed", "failed"),
             cell("b>a/m/s", "known", "skipped"), cell("b>b/m/s", "skipped", "skipped"),
             cell("c>c/m/s", "failed", "failed")]
    page = render(cells, None, "t")
    assert re.findall(r'<span class="o-(\w+)" title="[^"]*">[A-Z?]+ (\d+)</span>', page) == [
        ("passed", "1"), ("failed", "1"), ("broken", "0"), ("known", "1"), ("fixed", "1"), ("flaky", "0"),
        ("skipped", "1")]
    assert 'data-outcome="fixed" title="a&gt;b/m/s: FIXED?"' in page
    assert ("Allure&#x27;s overview ring counts each cell&#x27;s latest result by Allure status: 1 passed "
            "(1 PASS); 2 failed (1 FAIL, 1 FIXED?); 2 skipped (1 KNOWN, 1 SKIP).") in page
