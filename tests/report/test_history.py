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


DECR, WIDER = "3f2a9c1e07", "9c1e3f2a07"


def _known(run: str, finished: str, checks: dict[str, tuple[str, str]] | None) -> RunEntry:
    cells = {"a>b/m/s": ("known", "the decrementer")}
    return RunEntry(run, finished, "test", cells, {} if checks is None else {"a>b/m/s": checks})


class TestKnownFailureChanged:
    def test_a_check_newly_failing_or_not_measured_or_explained_by_another_entry(self) -> None:
        before = _known("r1", "2026-11-28T01:00:00+00:00", {"timer-ticks-on-schedule": ("failed", DECR),
                                                            "cpu-progress-on-every-cpu": ("failed", DECR)})
        now = {"timer-ticks-on-schedule": ("failed", WIDER),
               "cpu-progress-on-every-cpu": ("not measured", DECR),
               "ipis-delivered-between-every-pair-of-cpus": ("failed", DECR)}
        changes = what_changed({"a>b/m/s": ("known", "the decrementer")}, [before], {"a>b/m/s": now})
        [change] = changes.changes
        assert (change.kind, change.before, change.now) == ("known, failure changed", "known", "known")
        assert change.reason == (f"timer-ticks-on-schedule explained by {WIDER}, was {DECR}; cpu-progress-"
                                 f"on-every-cpu newly not measured (explained by {DECR}); ipis-delivered-"
                                 f"between-every-pair-of-cpus newly failed (explained by {DECR})")
        assert changes.fails_run == [change]
        assert "1 known, failure changed" in changes.headline()

    def test_the_same_failure_or_one_check_fewer_is_no_change(self) -> None:
        before = _known("r1", "2026-11-28T01:00:00+00:00", {"timer-ticks-on-schedule": ("failed", DECR),
                                                            "cpu-progress-on-every-cpu": ("failed", DECR)})
        for now in ({"timer-ticks-on-schedule": ("failed", DECR),
                     "cpu-progress-on-every-cpu": ("failed", DECR)},
                    {"timer-ticks-on-schedule": ("failed", DECR)}):
            changes = what_changed({"a>b/m/s": ("known", "")}, [before], {"a>b/m/s": now})
            assert changes.changes == () and changes.fails_run == []
            assert "known, failure changed" not in changes.headline()

    def test_a_check_back_under_an_intermittent_entry_is_no_change(self) -> None:
        """7.2>7.2 baseline-idle's ticks came once in 20 (the intermittent entry): the next run
        that loses them again is the entry doing what it declares, not a changed failure."""
        before = _known("r1", "2026-11-28T01:00:00+00:00", {"machine-state-cpu-0-decr": ("failed", WIDER)})
        now = {"machine-state-cpu-0-decr": ("failed", WIDER), "timer-ticks-on-schedule": ("failed", DECR)}
        assert what_changed({"a>b/m/s": ("known", "")}, [before], {"a>b/m/s": now},
                            intermittent={DECR}).changes == ()
        [change] = what_changed({"a>b/m/s": ("known", "")}, [before], {"a>b/m/s": now}).changes
        assert change.kind == "known, failure changed"

    def test_the_latest_run_with_the_cell_is_compared(self) -> None:
        older = _known("r1", "2026-11-27T01:00:00+00:00", {"timer-ticks-on-schedule": ("failed", DECR)})
        latest = _known("r2", "2026-11-28T01:00:00+00:00", {"ipis": ("failed", DECR)})
        changes = what_changed({"a>b/m/s": ("known", "")}, [older, latest],
                               {"a>b/m/s": {"ipis": ("failed", DECR)}})
        assert changes.changes == ()


def test_history_lines_without_checks_load_and_their_cells_are_not_compared(tmp_path: Path) -> None:
    path = tmp_path / RUNS_FILE
    path.write_text('{"run": "old", "finished": "2026-11-28T01:00:00+00:00", "label": "test", '
                    '"cells": {"a>b/m/s": ["known", "the decrementer"]}}\n')
    [old] = read_runs(path)
    assert (old.cells, old.checks) == ({"a>b/m/s": ("known", "the decrementer")}, {})
    changes = record_run(tmp_path, _known("new", "2026-11-29T01:00:00+00:00",
                                          {"timer-ticks-on-schedule": ("failed", DECR)}))
    assert changes.changes == () and changes.compared == 1
    [_, new] = read_runs(path)
    assert new.checks == {"a>b/m/s": {"timer-ticks-on-schedule": ("failed", DECR)}}
    changes = record_run(tmp_path, _known("newer", "2026-11-30T01:00:00+00:00",
                                          {"timer-ticks-on-schedule": ("failed", WIDER)}))
    assert [c.kind for c in changes.changes] == ["known, failure changed"]
