"""The run history and what changed since each cell's previous run."""

from __future__ import annotations

from pathlib import Path

from harness.report.history import RUNS_FILE, RunEntry, read_runs, record_run, what_changed


def _run(run: str, finished: str, **cells: str) -> RunEntry:
    return RunEntry(run, finished, "test", {c.replace("_", "/"): (o, f"why {o}") for c, o in cells.items()})


def test_each_kind_of_change_against_the_cells_previous_outcome() -> None:
    earlier = [_run("r1", "2026-11-28T01:00:00+00:00", a="passed", b="failed", c="failed", d="passed",
                    e="known"),
               _run("r2", "2026-11-29T01:00:00+00:00", a="passed", f="known")]  # a shard without b..e
    current = {"a": ("failed", "CheckFailed: ..."), "b": ("passed", ""), "c": ("known", "declared"),
               "d": ("flaky", "2 passed, 1 failed"), "e": ("known", "declared"), "f": ("fixed", "passes now"),
               "g": ("failed", "new cell")}
    changes = what_changed(current, earlier)
    assert [(c.cell, c.kind, c.before) for c in changes.changes] == [
        ("a", "newly failing", "passed"), ("b", "newly passing", "failed"), ("f", "newly passing", "known"),
        ("c", "newly known", "failed"), ("d", "flaky", "passed")]
    assert (changes.compared, changes.new_cells) == (6, 1)
    assert changes.headline() == ("what changed since 2026-11-29 01:00 UTC: 1 newly failing, 2 newly "
                                  "passing, 1 newly known, 1 flaky (6 cells compared, 1 new cell)")


def test_the_first_run_has_nothing_to_compare_with() -> None:
    changes = what_changed({"a": ("passed", "")}, [])
    assert changes.since is None
    assert changes.lines() == ["what changed: nothing to compare with (no earlier run in the history)"]


def test_record_run_compares_then_appends_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    record_run(tmp_path, _run("r1", "2026-11-28T01:00:00+00:00", a="passed"))
    with (tmp_path / RUNS_FILE).open("a") as file:
        file.write('{"run": "killed", "cel')  # a run killed while appending
    changes = record_run(tmp_path, _run("r2", "2026-11-29T01:00:00+00:00", a="failed"))
    assert [c.kind for c in changes.changes] == ["newly failing"]
    assert [e.run for e in read_runs(tmp_path / RUNS_FILE)] == ["r1", "r2"]
