"""The matrix view: a grid per scenario and machine type, squares by outcome, linked to Allure."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from harness.report.history import Change, Changes
from harness.report.matrix_page import Ring, render, ring_note
from harness.report.results import CellResult, RunResult, read_cells
from harness.report.run_summary import OUTCOMES, CellOutcome, by_cell, summary_lines


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
    assert re.findall(r'<span class="o-(\w+)" data-outcome="\w+" title="[^"]*">[A-Z?]+ (\d+)</span>',
                      page) == [
        ("passed", "1"), ("failed", "1"), ("flaky", "0"), ("known", "1"), ("fixed", "1"), ("broken", "0"),
        ("skipped", "1")]
    assert 'data-outcome="fixed" title="a&gt;b/m/s: FIXED?"' in page
    assert ("Allure&#x27;s overview ring is passed / (passed + failed + broken) = 1 / (1 + 2 + 0) = 33.33 %, "
            "over each cell&#x27;s latest result by Allure status: 1 passed (1 PASS); 2 failed (1 FAIL, "
            "1 FIXED?); 2 skipped (1 KNOWN, 1 SKIP), not in its rate.") in page


class TestRing:
    """What Allure's overview ring shows, from the cells' latest Allure statuses."""

    @staticmethod
    def _cells(**statuses: tuple[str, int]) -> list[CellResult]:
        return [CellResult(f"{outcome}{n}>x/m/s", (RunResult(f"{outcome}{n}>x/m/s", outcome, "", "", "id", 1,
                                                             status),))
                for outcome, (status, count) in statuses.items() for n in range(count)]

    def test_the_nightly_of_the_issue(self) -> None:
        ring = Ring.of(self._cells(passed=("passed", 64), fixed=("failed", 1), known=("skipped", 214),
                                   skipped=("skipped", 22)))
        assert ring.rate() == "64 / (64 + 1 + 0) = 98.46 %"  # Allure rounds down: 98.4615... is 98.46
        assert ring.statuses() == ("64 passed (64 PASS); 1 failed (1 FIXED?); 236 skipped (214 KNOWN, "
                                   "22 SKIP), not in its rate")

    def test_rounded_down_as_allure_does_and_zero_without_a_rate(self) -> None:
        assert Ring.of(self._cells(passed=("passed", 2), failed=("failed", 1))).percent == 66.66
        floats = Ring.of(self._cells(passed=("passed", 57), failed=("failed", 43)))
        assert floats.percent == 56.99  # as in JS: 57 / 100 * 10000 is just under 5700
        assert Ring.of(self._cells(known=("skipped", 3))).rate() == "0 / (0 + 0 + 0) = 0 %"
        assert "over each cell's latest result by Allure status: no results." in ring_note([])


RUNS = [  # (cell, goldmig outcome, Allure status, message) as the plugin writes one result of each run
    ("qemu-7.2>qemu-10.0/latest-common/baseline-timer", "passed", "passed", ""),
    ("qemu-10.0>qemu-7.2/latest-common/baseline-timer", "failed", "failed",
     "harness.errors.MigrationFailed: cpu/slb: incoming version_id 2 is too new"),
    ("qemu-7.2>qemu-7.2/latest-common/baseline-timer", "known", "skipped",
     "XFAIL known failure: DECR not migrated\n\nharness.errors.CheckFailed: timer ticks"),
    ("qemu-5.2>qemu-7.2/latest-common/baseline-timer", "fixed", "failed",
     "known failure now passes: qemu-5.2>qemu-7.2/latest-common/baseline-timer: known_failures entry ..."),
    ("qemu-10.0>qemu-10.0/latest-common/baseline-timer", "broken", "broken",
     "harness.errors.HostError: no sshd"),
    ("qemu-5.2>qemu-10.0/latest-common/baseline-timer", "skipped", "skipped",
     "Skipped: qemu-5.2 has no machine type latest-common"),
    ("qemu-5.2>qemu-5.2/latest-common/baseline-timer", "passed", "passed", ""),  # flaky: passed, then
    ("qemu-5.2>qemu-5.2/latest-common/baseline-timer", "failed", "failed", "harness.errors.CheckFailed: x"),
]


def _results(directory: Path, runs: list[tuple[str, str, str, str]], verdicts: bool = True) -> Path:
    directory.mkdir()
    for n, (cell, outcome, status, message) in enumerate(runs):
        labels = [{"name": "verdict", "value": outcome}] if verdicts else []
        (directory / f"{n}-result.json").write_text(json.dumps({
            "uuid": f"u{n}", "name": cell, "status": status, "stop": n, "labels": labels,
            "statusDetails": {"message": message} if message else {}}))
    return directory


@pytest.mark.parametrize("verdicts", [True, False], ids=["verdict labels", "older results, without them"])
def test_each_square_and_the_legend_are_the_run_summary_s(tmp_path: Path, verdicts: bool) -> None:
    """One cell of each outcome (a fixed one among them) read back from Allure results: every
    square, the legend's counts and the count line are what harness/report/run_summary.py makes of the
    same runs."""
    page = render(read_cells([_results(tmp_path / "results", RUNS, verdicts)]), None, "nightly")
    runs = [CellOutcome(cell, outcome) for cell, outcome, _, _ in RUNS]
    summary = summary_lines(runs)
    said = {c.cell: c for c in by_cell(runs)}
    assert {c.outcome for c in said.values()} == set(OUTCOMES)  # one cell of each

    squares = {html.unescape(cell): (outcome, label) for cell, outcome, label in re.findall(
        r'<td class="o-\w+" data-cell="([^"]+)" data-outcome="(\w+)" title="[^"]*"><a [^>]*>([A-Z?]+)</a>',
        page)}
    assert squares == {cell: (c.outcome, c.line(1).split()[0]) for cell, c in said.items()}
    assert squares["qemu-5.2>qemu-7.2/latest-common/baseline-timer"] == ("fixed", "FIXED?")

    legend = {o: int(n) for o, n in re.findall(
        r'<span class="o-\w+" data-outcome="(\w+)"[^>]*>[A-Z?]+ (\d+)</span>', page)}
    head = summary[0]  # goldmig: 7 cells (8 runs): 1 passed, 1 failed, 1 flaky, 1 known, 1 fixed, ...
    assert legend == {o: int(n) for n, o in re.findall(r"(\d+) (\w+)", head.split(": ", 2)[2])}
    assert list(legend) == list(OUTCOMES)
    assert f'<p id="summary"><b>{html.escape(head)}</b>' in page


def _checked(cell: str, outcome: str, *red: str) -> CellResult:
    checks = tuple({"id": name, "verdict": "failed"} for name in red)
    return CellResult(cell, (RunResult(cell, outcome, "", "", f"id-{cell}", 0, checks=checks),))


def test_each_kvm_cell_is_shown_beside_its_tcg_twin_with_the_checks_red_on_one_side() -> None:
    twin = "qemu-7.2>qemu-7.2/pseries-7.2/baseline-idle"
    page = render([_checked(twin, "known", "timer-ticks-on-schedule", "machine-state-cpu-0-decr"),
                   _checked(f"kvm:{twin}", "failed", "migrated-timebase-resumed-on-the-destination"),
                   _checked("qemu-7.2>qemu-7.2/pseries-7.2/pingpong", "passed")], None, "goldmig nested")
    row = re.search(r'<tr data-cell="qemu-7.2&gt;qemu-7.2/pseries-7.2/baseline-idle">(.*?)</tr>', page)
    assert row is not None, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert [re.sub(r"<[^>]+>", "", c) for c in cells] == [
        "KNOWN", "FAIL", "machine-state-cpu-0-decr, timer-ticks-on-schedule",
        "migrated-timebase-resumed-on-the-destination", "none"]
    assert page.count("<tr data-cell=") == 1, "a cell without a kvm: twin has no row"


def test_no_twin_table_without_kvm_cells() -> None:
    assert "TCG and KVM" not in render([_checked("qemu-7.2>qemu-7.2/pseries-7.2/pingpong", "passed")],
                                       None, "goldmig")
