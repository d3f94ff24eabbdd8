"""The pytest plugin's outcomes, through pytester: failed vs broken, known, fixed, summary.

The cell bodies here raise the harness's own errors instead of running QEMU:
what is under test is the classification and reporting, not migration.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pytest

from harness import pytest_plugin
from harness.errors import BuildError
from harness.matrix.load import load_matrix
from harness.pytest_plugin import _ready_builds

pytest_plugins = ["pytester"]

MATRIX = textwrap.dedent("""
    builds:
      a: {kind: host}
      b: {kind: host}
    groups:
      - name: g
        builds: [a, b]
        machines: [pseries-7.2]
        scenarios: [baseline-idle]
    selections:
      all: ["*"]
      one: ["a>b/*"]
    default_selection: all
    known_failures:
      - cells: "b>a/*"
        check: [timebase-never-goes-backwards, timebase-forward-jump-within-bound]
        match: "timebase"
        reason: "declared timebase bug"
        evidence: "a log"
      - cells: "b>b/*"
        check: online-cpus
        match: "never happens"
        reason: "declared but now passing"
        evidence: "a log"
""")

BODY = textwrap.dedent("""
    from harness.checks.result import CheckResult
    from harness.errors import CheckFailed, HarnessError

    def test_cell(cell, cell_record):
        if cell.id.startswith("a>a"):
            return
        if cell.id.startswith("a>b"):
            raise CheckFailed("online CPUs", "0", "0-1", "probe")
        if cell.id.startswith("b>a"):
            raise CheckFailed("timebase never goes backwards", 0, 5, "watcher")
        if cell.id.startswith("b>b"):  # measured what its entry names, and it held
            cell_record.checks.append(CheckResult("online CPUs", True, "0-1", "0-1", "probe"))
""")


@pytest.fixture(autouse=True)
def _own_reports(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("GOLDMIG_REPORTS", str(tmp_path_factory.mktemp("reports")))


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", matrix=MATRIX)
    pytester.makepyfile(test_cells=BODY)
    return pytester


def _run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suite.runpytest_subprocess("-p", "harness.pytest_plugin", "--matrix",
                                      str(suite.path / "matrix.yaml"), *args)


def test_outcomes_and_summary(suite: pytest.Pytester) -> None:
    result = _run(suite)
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    result.stdout.fnmatch_lines([
        "goldmig: 4 cells: 1 passed, 1 failed, 0 flaky, 1 known, 1 fixed, 0 broken, 0 skipped",
        "  FAIL   a>b/pseries-7.2/baseline*[[]unexplained: online-cpus, checks-after-the-failure (not "
        "measured, after online-cpus)]  failed: online CPUs: before='0' after='0-1'",
        "  KNOWN  b>a/pseries-7.2/baseline*[[]timebase-never-goes-backwards, checks-after-the-failure (not "
        "measured, after timebase-never-goes-backwards) by b>a/*]  declared timebase bug",
        "  FIXED? b>b/pseries-7.2/baseline*known failure now passes*",
        "checks measured (passed or failed) per cell, median: failed 1 (1 cell), known 1 (1 cell), "
        "fixed 1 (1 cell)",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_junit_carries_each_cells_checks_and_their_entries(suite: pytest.Pytester) -> None:
    junit = suite.path / "junit.xml"
    _run(suite, "--junitxml", str(junit))
    cases = {c.get("name"): c for c in ElementTree.parse(junit).getroot().iter("testcase")}
    known = cases["test_cell[b>a/pseries-7.2/baseline-idle]"]
    props = {p.get("name"): p.get("value") for p in known.iter("property")}
    assert props["goldmig.outcome"] == "known"
    assert props["goldmig.check.timebase-never-goes-backwards"].startswith("failed; explained by ")
    assert "(b>a/*): 5" in props["goldmig.check.timebase-never-goes-backwards"]
    assert props["goldmig.check.checks-after-the-failure"].startswith(
        "not measured (after timebase-never-goes-backwards); explained by ")
    [entry] = [v for k, v in props.items() if k.startswith("goldmig.known_failure.")]
    assert entry == ("cells b>a/*; checks timebase-never-goes-backwards, timebase-forward-jump-within-bound; "
                     "match 'timebase': declared timebase bug")
    assert [c["id"] for c in json.loads(props["goldmig.checks"])] == [
        "timebase-never-goes-backwards", "checks-after-the-failure"]
    assert known.find("skipped") is not None, "a known cell stays an xfail"
    failed = {p.get("name"): p.get("value")
              for p in cases["test_cell[a>b/pseries-7.2/baseline-idle]"].iter("property")}
    assert failed["goldmig.check.online-cpus"] == "failed; unexplained: 0-1"
    fixed = cases["test_cell[b>b/pseries-7.2/baseline-idle]"].find("failure")
    assert fixed is not None and "known failure now passes" in str(fixed.get("message"))


def test_a_known_cell_whose_failed_checks_change_fails_the_run(suite: pytest.Pytester) -> None:
    (suite.path / "matrix.yaml").write_text(MATRIX.replace('one: ["a>b/*"]',
                                                           'one: ["a>b/*"]\n  known: ["b>a/*"]'))
    first = _run(suite, "--select", "known")
    first.assert_outcomes(xfailed=1)
    assert first.ret == pytest.ExitCode.OK
    suite.makepyfile(test_cells=BODY.replace('"timebase never goes backwards", 0, 5',
                                             '"timebase forward jump within bound", 0, 5'))
    second = _run(suite, "--select", "known")
    second.assert_outcomes(xfailed=1)
    second.stdout.fnmatch_lines([
        "what changed since * UTC: 0 newly failing, 0 newly passing, 0 newly known, 1 known, failure "
        "changed, 0 flaky (1 cell compared)",
        "  known, failure changed b>a/pseries-7.2/baseline-idle  was known, now known: timebase-forward-"
        "jump-within-bound newly failed (explained by *)",
        "goldmig: the run fails: 1 known cell failed otherwise than before*(b>a/pseries-7.2/baseline-idle)",
    ])
    assert second.ret == pytest.ExitCode.TESTS_FAILED
    third = _run(suite, "--select", "known")  # the same failure again: nothing changed, the run passes
    assert third.ret == pytest.ExitCode.OK, third.stdout.str()


def test_an_entry_that_explained_nothing_in_all_its_cells_is_listed_stale(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", matrix=MATRIX.replace("known_failures:", "\n".join([
        "known_failures:", '  - cells: "a>b/*"', "    check: ipis-delivered-between-every-pair-of-cpus",
        '    match: "lost"', '    reason: "IPIs lost"', '    evidence: "a log"'])))
    pytester.makepyfile(test_cells=BODY)
    result = _run(pytester, "--select", "one")
    result.stdout.fnmatch_lines([
        "stale entries: 1 (a review hint, not a failure)",
        "  stale known_failures entry: cells a>b/*, checks ipis-delivered-between-every-pair-of-cpus; "
        "explained nothing in its 1 cell this run [[]*]",
    ])
    assert "cells b>a/*" not in result.stdout.str(), "an entry whose cells did not all run is not judged"


def test_harness_error_is_broken_not_failed(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", matrix=MATRIX)
    pytester.makepyfile(test_cells="""
        from harness.errors import HarnessError
        def test_cell(cell, cell_record):
            raise HarnessError("sshd did not start")
    """)
    result = _run(pytester, "--select", "one")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*0 failed, 0 flaky, 0 known, 0 fixed, 1 broken*",
                                 "  BROKEN a>b/pseries-7.2/baseline*HarnessError: sshd did not start*"])


def test_unknown_selection_is_a_usage_error(suite: pytest.Pytester) -> None:
    result = _run(suite, "--select", "smok")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--select 'smok': no such selection in*; choose one of all, one*"])


def test_broken_matrix_is_a_usage_error_naming_the_key(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", matrix=MATRIX.replace("scenarios: [baseline-idle]", "scenarios: [basline]"))
    pytester.makepyfile(test_cells=BODY)
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*matrix.yaml: groups[[]0].scenarios[[]0]: 'basline' is not a scenario "
                                 "or scenario-variant; did you mean 'baseline'?*"])
    assert "Traceback" not in result.stderr.str()


def test_intermittent_known_failure_that_passes_is_reported_not_fixed(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", matrix=MATRIX.replace(
        'reason: "declared but now passing"', 'reason: "racy timer"\n    intermittent: true'))
    pytester.makepyfile(test_cells=BODY)
    result = _run(pytester)
    result.assert_outcomes(passed=2, failed=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "goldmig: 4 cells: 2 passed, 1 failed, 0 flaky, 1 known, 0 fixed, 0 broken, 0 skipped",
        "  PASS   b>b/pseries-7.2/baseline*intermittent known failure did not reproduce: racy timer",
    ])


def test_shards_partition_the_cells(suite: pytest.Pytester) -> None:
    seen = []
    for shard in ("1/3", "2/3", "3/3"):
        result = _run(suite, "--shard", shard, "--collect-only", "-q")
        seen += [line for line in result.outlines if "test_cell[" in line]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 4


def test_bad_shard_is_a_usage_error(suite: pytest.Pytester) -> None:
    result = _run(suite, "--shard", "4/3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard '4/3': expected I/N with 1 <= I <= N*"])


def test_repeat_counts_passes_per_cell_and_calls_a_changing_outcome_flaky(pytester: pytest.Pytester) -> None:
    two = MATRIX.replace('one: ["a>b/*"]', 'one: ["a>b/*"]\n  two: ["a>b/*", "b>a/*"]')
    pytester.makefile(".yaml", matrix=two)
    pytester.makepyfile(test_cells="""
        from harness.errors import GuestUnresponsive
        def test_cell(cell, cell_record):
            if cell.id.startswith("a>b") and cell_record.attempt % 2 == 0:
                raise GuestUnresponsive("dst: no tick heartbeat")
            if cell.id.startswith("b>a"):
                raise GuestUnresponsive("dst: no tick heartbeat")
    """)
    results = pytester.path / "allure"
    result = _run(pytester, "--repeat", "4", "--select", "two", "--alluredir", str(results))
    result.assert_outcomes(passed=2, failed=6)
    result.stdout.fnmatch_lines([
        "goldmig: 2 cells (8 runs): 0 passed, 1 failed, 1 flaky, 0 known, 0 fixed, 0 broken, 0 skipped",
        "  FAIL   b>a/pseries-7.2/baseline-idle*0/4 passed  [[]unexplained: guest-answers, *]  failed: guest "
        "answers: before='' after='dst: no tick heartbeat'",
        "  FLAKY  a>b/pseries-7.2/baseline-idle*2/4 passed (2 passed, 2 failed)*",
    ])
    flaky = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    flags = {(r["name"], r.get("statusDetails", {}).get("flaky", False)) for r in flaky}
    assert flags == {("a>b/pseries-7.2/baseline-idle", True), ("b>a/pseries-7.2/baseline-idle", False)}
    assert len({r["historyId"] for r in flaky if r["name"].startswith("a>b")}) == 1, "runs are retries"


def test_repeat_must_be_positive(suite: pytest.Pytester) -> None:
    result = _run(suite, "--repeat", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--repeat 0: give a count of 1 or more*"])


def test_the_selected_cells_builds_are_made_ready_once_before_any_cell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source build compiles at the session's start, not inside a cell beside running ones; a
    build that cannot be made is left to its cells (they fail with its error, as before)."""
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX)
    matrix = load_matrix(path)
    located: list[str] = []

    class Recording:
        def locate(self, spec: object, side: str) -> None:
            located.append(spec.name)  # type: ignore[attr-defined]
            if located[-1] == "b":
                raise BuildError("b cannot be made here")

    site = Recording()
    monkeypatch.setattr(pytest_plugin, "site_for", lambda matrix, cell=None: site)
    _ready_builds(matrix, matrix.select("all"))
    assert located == ["a", "b"]
