"""A per-patch job with a base: its cells have run; judge the candidate against the base,
run again what differs to tell a flaky check from a break, and say it.

Writes ``reports/patch.json`` (every compared check; a copy in the Allure results, so that the
report opens on the base/candidate table) and ``reports/junit.xml`` (one testcase per cell and
check that differs; the cells' own junit becomes ``junit-cells.xml``). Exits non-zero only
when the candidate breaks a check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import yaml

from harness.commands.patch_compare import ALONE, CheckChange, compare, differing, summary, twin, write_junit
from harness.paths import reports_root
from harness.report.run_summary import CellOutcome, read_cells_json

AGAIN = "again"
"""The generated matrix's selection of the cell pairs run again."""


def judge_against_base(args: argparse.Namespace, rerun: Callable[[list[str]], int]) -> int:
    reports = reports_root()
    cells = reports / "cells.json"
    if not cells.exists():
        print("goldmig patch: no cell ran; nothing to compare")
        return 2
    outcomes = read_cells_json(cells)
    changes = compare(outcomes)
    redo = differing(changes)
    if redo and args.again > 0:
        _select(Path(args.matrix), [*redo, *(t for c in redo if (t := twin(c)))])
        print(f"goldmig patch: {len(redo)} cell pair(s) differ; running each {args.again} more "
              "time(s) to tell a flaky check from a break")
        rerun(["--select", AGAIN, "--repeat", str(args.again)])
        if cells.exists():
            outcomes = [*outcomes, *read_cells_json(cells)]
            changes = compare(outcomes)
    compared = {c.cell for c in changes if c.change != ALONE}
    alone = {o.cell: o.outcome for o in outcomes if twin(o.cell) is not None and o.cell not in compared}
    lines = summary(changes, alone)
    print("\n".join(lines))
    _write(outcomes, changes, lines, reports)
    return 1 if any(c.change == "breaks" for c in changes) else 0


def _select(matrix: Path, cells: list[str]) -> None:
    """Add the selection :data:`AGAIN` of ``cells`` to the generated matrix."""
    header, _, body = matrix.read_text().partition("\n")
    data = yaml.safe_load(body)
    data["selections"][AGAIN] = sorted(set(cells))
    matrix.write_text(f"{header}\n" + yaml.safe_dump(data, sort_keys=False))


def _write(outcomes: list[CellOutcome], changes: list[CheckChange], lines: list[str], reports: Path) -> None:
    (reports / "cells.json").write_text(json.dumps([dataclasses.asdict(o) for o in outcomes], indent=1))
    compared = json.dumps({"summary": lines[0], "checks": [dataclasses.asdict(c) for c in changes]}, indent=1)
    (reports / "patch.json").write_text(compared)
    if (reports / "allure-results").is_dir():
        (reports / "allure-results" / "patch.json").write_text(compared)
    junit = reports / "junit.xml"
    if junit.exists():
        junit.replace(reports / "junit-cells.xml")
    write_junit(changes, str(junit))
