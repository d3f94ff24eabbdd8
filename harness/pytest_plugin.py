"""The pytest plugin behind suite/: options, cell parametrisation, known failures, reporting.

Outcomes: a ProductFailure (QEMU or guest misbehaved) is *failed*; any other
error is *broken*; a cell whose every failed or not measured check a
known_failures entry explains is *known* (xfail); a known failure that passes
is *fixed* and fails the run so the entry gets reviewed; an impossible cell is
*skipped* with its reason.

At the end of a run (on the controller, from the workers' reports): the
summary with each cell's checks, what changed since the history (a known cell
whose failure changed fails the run, as a fixed one does), and the
known_failures entries that explained nothing in a run of all their cells
(stale: listed for review, never a failure).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.checks.verdict import CellVerdict, checks_json, failure_checks, judge
from harness.drivers import DRIVERS
from harness.errors import ConfigError, HarnessError, ProductFailure
from harness.guest.image import KERNELS
from harness.matrix.load import load_matrix
from harness.matrix.model import Cell, KnownFailure, Matrix
from harness.paths import REPO_ROOT, reports_root
from harness.report.checklist import CheckStates, states
from harness.report.history import Changes, RunEntry, now_iso, record_run
from harness.report.run_summary import CellOutcome, by_cell, flaky_cells, summary_lines, write_cells_json
from harness.report.safe_logger import SpaceSafeFileLogger, install_safe_logger
from harness.report.stale import StaleEntry, stale_entries, stale_lines
from harness.runner.cell import CellImpossible, CellRecord, run_cell
from harness.runner.celllog import evidence_dir
from harness.runner.rundir import sweep_stale_rundirs
from harness.sites import site_for

_MATRIX_KEY = pytest.StashKey[Matrix]()
_SAFE_LOGGER_KEY = pytest.StashKey[SpaceSafeFileLogger | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("goldmig", "goldmig migration matrix")
    group.addoption("--matrix", default=str(REPO_ROOT / "matrix.yaml"),
                    help="matrix file (default: matrix.yaml at the top of the repo)")
    group.addoption("--select", default=None,
                    help="named selection of cells from the matrix (default: its default_selection)")
    group.addoption("--repeat", default=1, type=int, metavar="N",
                    help="run each selected cell N times; the summary gives each cell's pass count "
                         "and calls a cell whose outcome changed between runs flaky")
    group.addoption("--guest-kernel", default=None, choices=KERNELS,
                    help="the golden guest's kernel, instead of the matrix's guest.kernel")
    group.addoption("--shard", default=None, metavar="I/N",
                    help="run only shard I of N (1-based) of the selected cells, for splitting "
                         "a run across machines; merge the shards' allure-results directories")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cell(id): one goldmig matrix cell")
    try:
        matrix = load_matrix(Path(config.getoption("--matrix")))
    except ConfigError as exc:
        raise pytest.UsageError(f"goldmig: {exc}") from None
    try:
        config.option.select = selection_of(matrix, config.getoption("--select"))
        config.option.shard = parse_shard(config.getoption("--shard"))
    except ValueError as exc:
        raise pytest.UsageError(f"goldmig: {exc}") from None
    if config.getoption("--repeat") < 1:
        raise pytest.UsageError(f"goldmig: --repeat {config.getoption('--repeat')}: "
                                "give a count of 1 or more")
    if kernel := config.getoption("--guest-kernel"):
        matrix = dataclasses.replace(matrix, guest=dataclasses.replace(matrix.guest, kernel=kernel))
    config.stash[_MATRIX_KEY] = matrix
    if getattr(config.option, "allure_report_dir", None):
        config.stash[_SAFE_LOGGER_KEY] = install_safe_logger(config)


def selection_of(matrix: Matrix, name: str | None) -> str:
    """The selection named (None: the matrix's default); a ValueError naming the ones there are."""
    selection = name or matrix.default_selection
    if selection not in matrix.selections:
        raise ValueError(f"--select {selection!r}: no such selection in {matrix.source}; "
                         f"choose one of {', '.join(matrix.selections)}")
    return selection


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``I/N`` as (I, N); a ValueError saying what is wrong otherwise."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise ValueError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(index), int(count)


def selected_cells(matrix: Matrix, selection: str, shard: tuple[int, int] | None) -> list[Cell]:
    """The cells of a named selection, or of shard (I, N) of them."""
    cells = matrix.select(selection)
    if shard is not None:
        # Round-robin over the matrix order: stable for a given matrix, and
        # spreads slow builds across shards.
        cells = cells[shard[0] - 1::shard[1]]
    return cells


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the run's record afresh (a second run in one process, as ``goldmig patch`` makes,
    reports only its own cells); remove run directories, namespaces and sshds left by runs
    that were killed outright."""
    for kept in (_outcomes, _environment, _changes, _stale):
        kept.clear()
    if hasattr(session.config, "workerinput"):
        return
    sweep_stale_rundirs()
    matrix = session.config.stash[_MATRIX_KEY]
    cells = selected_cells(matrix, session.config.option.select, session.config.option.shard)
    for site in {matrix.hosts_of(c): site_for(matrix, c) for c in cells}.values() or [site_for(matrix)]:
        site.sweep()
        for name in DRIVERS:
            DRIVERS.load(name).sweep(site)
    if not session.config.option.collectonly:
        _ready_builds(matrix, cells)


def _ready_builds(matrix: Matrix, cells: list[Cell]) -> None:
    """Every build the selected cells use, made ready on their site before any cell starts: a
    source build compiles (minutes, once), a Debian root or the nested hosts' image is made
    here, not inside a cell while other cells run beside it and meet a loaded host. A build
    that cannot be made is left to its cells, which fail with the same error and its
    evidence, as they would without this."""
    for name, site in dict.fromkeys((b, site_for(matrix, c)) for c in cells for b in (c.src, c.dst)):
        started = time.monotonic()
        try:
            site.locate(matrix.builds[name], "a")
        except HarnessError:
            continue
        if (took := time.monotonic() - started) > 5:
            print(f"goldmig: build {name} made ready in {took:.0f} s (cached from now on)", file=sys.stderr)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" in metafunc.fixturenames:
        cells = selected_cells(metafunc.config.stash[_MATRIX_KEY], metafunc.config.option.select,
                               metafunc.config.option.shard)
        repeat = metafunc.config.getoption("--repeat")
        if repeat == 1:
            metafunc.parametrize("cell", cells, ids=[c.id for c in cells])
            return
        # The same parameter for every run, so that reports see runs of one test (Allure:
        # retries); the run number is only in the test id.
        runs = [c for c in cells for _ in range(repeat)]
        metafunc.parametrize("cell", runs, ids=[f"{c.id}{_RUN}{k % repeat + 1}" for k, c in enumerate(runs)])


_RUN = "#"
"""Separates a cell id from the run number in the test ids of ``--repeat``."""
_TO = "-to-"
"""What ``>`` in a ``-k`` expression stands for: pytest's grammar has no ``>``, cell ids do."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Let ``-k 'qemu-7.2>qemu-10.0'`` select cells (before pytest's own -k deselects)."""
    if ">" not in (config.option.keyword or ""):
        return
    config.option.keyword = config.option.keyword.replace(">", _TO)
    for item in items:
        callspec = getattr(item, "callspec", None)
        cell = callspec.params.get("cell") if callspec else None
        if isinstance(cell, Cell):
            item.extra_keyword_matches.add(cell.id.replace(">", _TO))


@pytest.fixture
def matrix(request: pytest.FixtureRequest) -> Matrix:
    return request.config.stash[_MATRIX_KEY]


@pytest.fixture
def attempt(request: pytest.FixtureRequest) -> int:
    """Which run of the cell this is (``--repeat``), from 1."""
    _, sep, number = request.node.callspec.id.rpartition(_RUN)
    return int(number) if sep else 1


@pytest.fixture
def cell_record(cell: Cell, attempt: int) -> Iterator[CellRecord]:
    yield CellRecord(cell, evidence_dir(cell.id, attempt), attempt)


def run(cell: Cell, matrix: Matrix, record: CellRecord) -> None:
    """Run a cell from a test; an impossible cell becomes a skip with its reason."""
    try:
        run_cell(cell, matrix, record)
    except CellImpossible as exc:
        pytest.skip(str(exc))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    from harness.report import allure as allure_report

    record = getattr(item, "funcargs", {}).get("cell_record")
    if record is not None:
        allure_report.label_cell(record, item.config.getoption("--repeat"))
    outcome = yield
    if record is not None:
        allure_report.attach_cell(record, outcome.excinfo[1] if outcome.excinfo else None)
        item.user_properties.append(("goldmig.phases", json.dumps(record.phases)))
        item.user_properties.append(("goldmig.parameters", json.dumps(record.parameters)))


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    result = yield
    report: pytest.TestReport = result.get_result()
    callspec = getattr(item, "callspec", None)
    cell = callspec.params.get("cell") if callspec else None
    if not isinstance(cell, Cell) or report.when not in ("setup", "call"):
        return
    if report.when == "setup" and report.passed:
        return
    matrix = item.config.stash[_MATRIX_KEY]
    record = getattr(item, "funcargs", {}).get("cell_record")
    outcome, reason, verdict = _classify(report, call, matrix.known_failures_for(cell.id),
                                         record if isinstance(record, CellRecord) else None)
    if outcome == "known":
        report.outcome = "skipped"
        report.wasxfail = f"known failure: {reason}"
    elif outcome == "fixed" and verdict is not None:
        report.outcome = "failed"
        report.longrepr = (f"known failure now passes: {cell.id}: "
                           + "; ".join(f"known_failures entry {', '.join(k.cells)} "
                                       f"(checks {', '.join(k.checks)}): {k.reason}" for k in verdict.fixed)
                           + "; remove or narrow the entry")
    properties = [("goldmig.cell", cell.id), ("goldmig.outcome", outcome), ("goldmig.reason", reason),
                  ("goldmig.attempt", str(record.attempt if isinstance(record, CellRecord) else 1))]
    if verdict is not None:
        properties.append(("goldmig.checks", json.dumps(checks_json(verdict))))
    report.user_properties.extend(properties)
    # junit.xml takes a test case's properties from its teardown report, made from the item's
    item.user_properties.extend(properties + _junit_properties(verdict))


def _junit_properties(verdict: CellVerdict | None) -> list[tuple[str, str]]:
    """For junit.xml readers: each failed or not measured check with the entry that explained it
    (or ``unexplained``), and each entry that explained something: its cells, checks and reason."""
    if verdict is None:
        return []
    props = []
    for v in verdict.checks:
        if not v.check.counts_against:
            continue
        why = f"{v.check.verdict.value}" + (f" (after {v.check.cause})" if v.check.cause else "")
        entry = v.explained_by
        by = f"explained by {entry.key} ({entry.cells[0]})" if entry is not None else "unexplained"
        props.append((f"goldmig.check.{v.check.id}", f"{why}; {by}: {str(v.check.after)[:200]}"))
    for entry in verdict.entries:
        props.append((f"goldmig.known_failure.{entry.key}", f"cells {', '.join(entry.cells)}; checks "
                      f"{', '.join(entry.checks)}; match {entry.match!r}: {entry.reason}"))
    return props


def _classify(
    report: pytest.TestReport, call: pytest.CallInfo[None], known: list[KnownFailure],
    record: CellRecord | None,
) -> tuple[str, str, CellVerdict | None]:
    """Outcome, reason, and the cell's verdict check by check (None: skipped or broken before
    any check)."""
    if report.skipped:
        return "skipped", str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "", None
    exc = call.excinfo.value if call.excinfo else None
    if exc is not None and not isinstance(exc, ProductFailure):
        return "broken", f"{type(exc).__name__}: {exc}", record.verdict if record else None
    verdict = record.verdict if record is not None else None
    if verdict is None:  # not judged by the cell's runner (it failed before, e.g. introspection)
        checks = list(record.checks) if record is not None else []
        verdict = judge(checks + (failure_checks(exc) if isinstance(exc, ProductFailure) else []), known)
    if verdict.outcome == "passed" and any(k.intermittent for k in known):
        first = next(k for k in known if k.intermittent)
        return "passed", f"intermittent known failure did not reproduce: {first.reason}", verdict
    return verdict.outcome, verdict.reason, verdict


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = {str(k): str(v) for k, v in report.user_properties}
    if "goldmig.outcome" not in props or report.when == "teardown":  # teardown: for junit.xml
        return
    phases = json.loads(props.get("goldmig.phases", "{}"))
    outcome = CellOutcome(props["goldmig.cell"], props["goldmig.outcome"], props["goldmig.reason"], phases,
                          json.loads(props.get("goldmig.checks", "[]")),
                          attempt=int(props.get("goldmig.attempt", "1")))
    _outcomes.append(outcome)
    if getattr(report, "node", None) is None:  # where the test ran (not an xdist controller)
        from harness.report import allure as allure_report

        allure_report.mark_result(outcome, report.longreprtext if outcome.outcome == "fixed" else "")
    params = json.loads(props.get("goldmig.parameters", "{}"))
    for key in ("source build", "destination build"):
        if key in params:
            name, _, rest = params[key].partition(" ")
            _environment[f"build.{name}"] = rest.strip("()")
    if "guest image" in params:
        _environment["guest.image"] = params["guest image"]


# Filled on the controller from the workers' reports (xdist forwards user_properties).
_outcomes: list[CellOutcome] = []
_environment: dict[str, str] = {}
_changes: list[Changes] = []  # what changed since the history, for the summary
_stale: list[StaleEntry] = []


def _check_states(outcomes: list[CellOutcome]) -> dict[str, CheckStates]:
    """Each judged cell's failed and not measured checks, over all its runs (``--repeat``)."""
    kept: dict[str, CheckStates] = {}
    for o in outcomes:
        if o.checks:
            mine = kept.setdefault(o.cell, {})
            for check, state in states(o.checks).items():
                mine.setdefault(check, state)
    return kept


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):
        return
    _stale[:] = stale_entries(session.config.stash[_MATRIX_KEY], _outcomes)
    # A full reports filesystem loses these files (said on stderr), never the run's outcome.
    label = f"{Path(session.config.option.matrix).name}, selection {session.config.option.select}"
    run = RunEntry(uuid.uuid4().hex[:12], now_iso(), label,
                   {c.cell: (c.outcome, c.said) for c in by_cell(_outcomes)}, _check_states(_outcomes))
    try:
        if _outcomes:
            write_cells_json(reports_root() / "cells.json", _outcomes)
            matrix = session.config.stash[_MATRIX_KEY]
            changes = record_run(reports_root() / "history", run,
                                 {k.key for k in matrix.known_failures if k.intermittent})
            _changes.append(changes)
            if changes.fails_run and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        results = getattr(session.config.option, "allure_report_dir", None)
        if results:
            from harness.report.allure import finish_results, write_environment

            finish_results(Path(results), flaky_cells(_outcomes),
                           {"run": run.run, "finished": run.finished, "label": label})
            entries = dict(_environment)
            entries["matrix"] = f"{session.config.option.matrix} selection={session.config.option.select}"
            write_environment(Path(results), entries)
    except OSError as exc:
        sys.stderr.write(f"goldmig: the run's reports could not all be written: {exc}\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _outcomes:
        terminalreporter.section("goldmig summary")
        for line in (summary_lines(_outcomes) + stale_lines(_stale) + [x for c in _changes for x in c.lines()]
                     + _failing_changes()):
            terminalreporter.write_line(line)
    logger = terminalreporter.config.stash.get(_SAFE_LOGGER_KEY, None)
    if logger is not None and logger.lost:
        terminalreporter.write_line(f"goldmig: {len(logger.lost)} Allure items could not be written "
                                    f"(first: {logger.lost[0]})")


def _failing_changes() -> list[str]:
    changed = [c for changes in _changes for c in changes.fails_run]
    if not changed:
        return []
    return [f"goldmig: the run fails: {len(changed)} known cell{'' if len(changed) == 1 else 's'} failed "
            "otherwise than before (a check newly failed or not measured, or another entry explains "
            "it): check that the declared failure is still the one that happens, then fix or extend "
            "the entry (" + ", ".join(c.cell for c in changed) + ")"]
