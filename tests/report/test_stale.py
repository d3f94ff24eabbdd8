"""Stale known_failures entries: explained nothing in a run that judged all of their cells."""

from __future__ import annotations

import textwrap
from pathlib import Path

from harness.matrix.load import load_matrix
from harness.matrix.model import Matrix
from harness.report.run_summary import CellOutcome
from harness.report.stale import stale_entries, stale_lines

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
      - {cells: "*>a/*", check: timer-ticks-on-schedule, match: "no tick", reason: "DECR", evidence: "log"}
      - {cells: "b>b/*", check: online-cpus, match: "x", reason: "CPUs", evidence: "log", intermittent: true}
""")


def _matrix(tmp_path: Path) -> Matrix:
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    return load_matrix(tmp_path / "matrix.yaml")


def _cell(cell: str, outcome: str, explained_by: str = "") -> CellOutcome:
    check = {"id": "timer-ticks-on-schedule", "verdict": "failed" if explained_by else "passed"}
    if explained_by:
        check["explained_by"] = explained_by
    return CellOutcome(cell, outcome, "", {}, [check])


def test_an_entry_that_explained_nothing_in_all_its_cells_is_stale(tmp_path: Path) -> None:
    matrix = _matrix(tmp_path)
    decr, cpus = matrix.known_failures
    ran = [_cell("a>a/pseries-7.2/baseline-idle", "fixed"), _cell("b>a/pseries-7.2/baseline-idle", "fixed"),
           _cell("b>b/pseries-7.2/baseline-idle", "fixed")]
    stale = stale_entries(matrix, ran)
    assert [(s.entry, s.cells) for s in stale] == [(decr, 2), (cpus, 1)]
    assert stale_lines(stale) == [
        "stale entries: 2 (a review hint, not a failure)",
        f"  stale known_failures entry: cells *>a/*, checks timer-ticks-on-schedule; explained nothing "
        f"in its 2 cells this run [{decr.key}]",
        f"  stale known_failures entry: cells b>b/*, checks online-cpus; explained nothing in its 1 cell "
        f"this run (intermittent: it may reproduce another time) [{cpus.key}]"]


def test_an_entry_that_explained_a_check_or_whose_cells_did_not_all_run_is_not(tmp_path: Path) -> None:
    matrix = _matrix(tmp_path)
    decr, _ = matrix.known_failures
    explained = [_cell("a>a/pseries-7.2/baseline-idle", "passed"),
                 _cell("b>a/pseries-7.2/baseline-idle", "known", decr.key)]
    assert [s.entry for s in stale_entries(matrix, explained)] == []
    shard = [_cell("a>a/pseries-7.2/baseline-idle", "fixed")]  # b>a ran elsewhere
    assert stale_entries(matrix, shard) == []
    broken = [_cell("a>a/pseries-7.2/baseline-idle", "fixed"),
              CellOutcome("b>a/pseries-7.2/baseline-idle", "broken", "HostError: no sshd")]
    assert stale_entries(matrix, broken) == [], "a cell broken before its checks judged nothing"
    assert stale_lines([]) == []
