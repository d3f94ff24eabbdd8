"""The pytest plugin's outcomes, through pytester: failed vs broken, known, fixed, summary.

The cell bodies here raise the harness's own errors instead of running QEMU:
what is under test is the classification and reporting, not migration.
"""

from __future__ import annotations

import json
import textwrap

import pytest

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
        match: "CheckFailed: timebase"
        reason: "declared timebase bug"
        evidence: "a log"
      - cells: "b>b/*"
        match: "never happens"
        reason: "declared but now passing"
        evidence: "a log"
""")

BODY = textwrap.dedent("""
    from harness.errors import CheckFailed, HarnessError

    def test_cell(cell, cell_record):
        if cell.id.startswith("a>a"):
            return
        if cell.id.startswith("a>b"):
            raise CheckFailed("online CPUs", "0", "0-1", "probe")
        if cell.id.startswith("b>a"):
            raise CheckFailed("timebase never goes backwards", 0, 5, "watcher")
        if cell.id.startswith("b>b"):
            return
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
        "  FAIL   a>b/pseries-7.2/baseline*CheckFailed: online CPUs: before='0' after='0-1'*",
        "  KNOWN  b>a/pseries-7.2/baseline*declared timebase bug*",
        "  FIXED? b>b/pseries-7.2/baseline*known failure now passes*",
    ])


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
        "  FAIL   b>a/pseries-7.2/baseline-idle*0/4 passed*GuestUnresponsive*",
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
