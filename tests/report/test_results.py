"""Reading a run's Allure results back as cells: outcome, reason, what failed, the Allure page."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.report.results import CellId, ReportError, RunResult, failure_kind, outcome_of, read_cells

REFUSED = ("harness.errors.MigrationFailed: destination QEMU exited with code 1 during migration: "
           "qemu-system-ppc64: cpu/slb: incoming version_id 2 is too new for local version_id 1 | ...")
STALL = ("harness.errors.CheckFailed: timer ticks on schedule: before=\"every CPU's tick gap <= 750 ms\" "
         "after='gaps: CPU 0 none'\nevidence: CPU 0: no tick after #4")


def _result(name: str, status: str, message: str = "", uuid: str = "u", stop: int = 1) -> dict[str, object]:
    return {"name": name, "uuid": uuid, "status": status, "stop": stop,
            "statusDetails": {"message": message} if message else {}}


class TestOneResult:
    @pytest.mark.parametrize(("status", "message", "outcome"), [
        ("passed", "", "passed"),
        ("failed", REFUSED, "failed"),
        ("broken", "harness.errors.HostError: no sshd", "broken"),
        ("skipped", "XFAIL known failure: DECR not migrated\n\n" + STALL, "known"),
        ("skipped", "Skipped: qemu-10.0 has no machine type pseries-2.7", "skipped"),
        ("failed", "known failure now passes: a>b/pseries-7.2/baseline-idle matched ...", "fixed"),
    ])
    def test_outcome_is_how_the_plugin_reported_it(self, status: str, message: str, outcome: str) -> None:
        assert outcome_of(status, message) == outcome

    def test_what_failed_names_the_refused_stream_and_the_broken_invariant(self) -> None:
        assert failure_kind("failed", REFUSED) == "stream refused on load"
        known = "XFAIL known failure: DECR\n\n" + STALL
        assert failure_kind("known", known) == "invariant: timer ticks on schedule"
        crashed = "harness.errors.QemuCrashed: dst QEMU killed by SIGSEGV"
        assert failure_kind("failed", crashed) == "QEMU crashed"
        assert failure_kind("broken", "harness.errors.HostError: no sshd") == "harness: HostError"
        assert failure_kind("passed", "") == ""

    def test_reason_is_the_first_line_without_the_module_path(self) -> None:
        result = RunResult.from_json(_result("a>b/m/s", "failed", REFUSED, uuid="abc"))
        assert result.reason.startswith("MigrationFailed: destination QEMU exited with code 1")
        assert result.report_id == hashlib.md5(b"abc").hexdigest()  # Allure 3's test result id
        known = RunResult.from_json(_result("a>b/m/s", "skipped", "XFAIL known failure: DECR not migrated\n\n"
                                            + STALL))
        assert known.reason == "DECR not migrated"


def test_cell_id_parts() -> None:
    assert CellId.parse("qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle") == CellId(
        "qemu-7.2", "qemu-10.0", "pseries-7.2", "baseline-idle")


def test_results_of_one_cell_that_differ_make_it_flaky_and_its_page_the_latest(tmp_path: Path) -> None:
    shard_a, shard_b = tmp_path / "a", tmp_path / "b"
    for directory, results in ((shard_a, [_result("x>y/m/s", "passed", uuid="1", stop=10),
                                          _result("x>x/m/s", "passed", uuid="3")]),
                               (shard_b, [_result("x>y/m/s", "failed", REFUSED, uuid="2", stop=20)])):
        directory.mkdir()
        for n, data in enumerate(results):
            (directory / f"{n}-result.json").write_text(json.dumps(data))
    cells = {c.cell: c for c in read_cells([shard_a, shard_b])}
    assert cells["x>y/m/s"].outcome == "flaky"
    assert cells["x>y/m/s"].reason.startswith("1 failed, 1 passed of 2 runs; MigrationFailed")
    assert cells["x>y/m/s"].latest.report_id == hashlib.md5(b"2").hexdigest()
    assert cells["x>x/m/s"].outcome == "passed"


def test_a_directory_without_results_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=f"{tmp_path}: no Allure results"):
        read_cells([tmp_path])
    with pytest.raises(ReportError, match="no such results directory"):
        read_cells([tmp_path / "missing"])
