"""A cell's Allure steps, built from its record after the fact."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from harness.checks.result import CheckResult, not_applicable, not_measured
from harness.checks.verdict import failure_checks, judge
from harness.errors import CheckFailed, ChecksFailed, GuestUnresponsive, MigrationFailed
from harness.matrix.model import Cell, KnownFailure
from harness.migration.run import MigrationFigures, MigrationResult
from harness.report.allure_steps import Step, add_to_test, plan
from harness.runner.cell import CellImpossible, CellRecord
from harness.runner.roles import Hop

CELL = Cell("qemu-7.2", "qemu-10.0", "pseries-7.2", "baseline", "idle")
QUERY = {"status": "completed", "total-time": 512, "downtime": 12, "setup-time": 3,
         "ram": {"transferred": 40 << 20, "total": 512 << 20, "mbps": 655.4}}


def _record(tmp_path: Path, phases: dict[str, float], files: tuple[str, ...] = ()) -> CellRecord:
    for name in files:
        (tmp_path / name).write_text(f"{name}\n")
    record = CellRecord(CELL, tmp_path, phases=dict(phases, total=sum(phases.values())))
    record.parameters.update({"source build": "qemu-7.2 (QEMU 7.2.22, 1:7.2+dfsg-7)",
                              "machine": "pseries-7.2", "guest image": "golden-6.1.0-50-powerpc64le-89626a"})
    return record


def _migration(tmp_path: Path) -> MigrationResult:
    stream = tmp_path / "stream-src-dst.bin"
    return MigrationResult(Hop("src", "dst"), MigrationFigures.from_query(QUERY), stream, 42_000_000, 0.6)


def _named(steps: list[Step] | tuple[Step, ...]) -> dict[str, Step]:
    return {s.name.split(":")[0].split(" (")[0]: s for s in steps}


def test_a_passing_cell_reads_as_provision_boot_hop_checks(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.1, "boot": 2.5, "migrate": 0.6, "check": 1.2},
                     ("src-argv.txt", "src-serial.log", "dst-qemu.log", "stream-src-dst.summary.txt"))
    record.migrations.append(_migration(tmp_path))
    record.checks += [CheckResult("destination is running", True, "running", "running", "query-status"),
                      CheckResult("timebase forward jump within bound", True,
                                  "<= 512000 ticks (12 ms + 500 ms)", {0: "10 ticks"}, "watcher")]
    steps = plan(record, None)
    assert [s.status for s in steps] == ["passed"] * 4
    provision, boot, hop, checks = steps
    assert dict(provision.parameters)["guest image"].startswith("golden-6.1.0-50")
    assert [(q.name, [a.name for a in q.attachments]) for q in boot.steps] == [
        ("source QEMU (qemu-7.2)", ["source command line", "source serial console"]),
        ("destination QEMU (qemu-10.0)", ["destination QEMU output"])]
    assert hop.name == "migration 1: source to destination (completed, 512 ms total, 12 ms downtime)"
    figures = dict(hop.parameters)
    assert (figures["downtime"], figures["setup time"]) == ("12 ms", "3 ms")
    assert figures["throughput"] == "655 Mbit/s"
    assert figures["transferred"] == "40.0 MiB of 512 MiB RAM"
    assert [a.name for a in hop.attachments] == ["stream summary (stream-src-dst)"]
    assert checks.name == "checks: 2 of 2 passed"
    assert dict(checks.steps[1].parameters)["bound"].startswith("<= 512000 ticks")
    assert (boot.seconds, hop.seconds) == (2.5, 0.6)


def test_a_refused_stream_fails_the_hop_with_qemus_words_and_the_diff(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.1, "boot": 2.5, "migrate": 0.4, "check": 0.2},
                     ("stream-src-dst.summary.txt", "stream-src-dst.diff.txt"))
    record.hops.append(Hop("src", "dst"))  # attempted (ScenarioContext.migrate), never completed
    error = MigrationFailed("destination QEMU exited with code 1 during migration: cpu/slb: incoming "
                            "version_id 2 is too new for local version_id 1")
    steps = plan(record, error)
    assert [s.status for s in steps] == ["passed", "passed", "failed"]
    hop = steps[-1]
    assert hop.name == "migration 1: source to destination"
    assert "cpu/slb: incoming version_id 2 is too new" in hop.message
    assert [a.name for a in hop.attachments] == [
        "stream summary (stream-src-dst)", "stream diff: what the receiving build cannot load, worst first"]


def test_a_cpu_stalled_right_after_the_hop_is_the_failed_check(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.1, "boot": 2.5, "migrate": 0.6, "check": 1.8})
    record.migrations.append(_migration(tmp_path))
    error = CheckFailed("timer ticks on schedule", "every CPU's tick gap <= 762 ms", "gaps: CPU 0 none",
                        "CPU 0: no tick after #5 within 1762 ms")
    checks = plan(record, error)[-1]
    assert checks.status == "failed"
    assert checks.name == "checks: 0 of 1 passed (1 failed)"
    [check] = checks.steps
    assert (check.name, check.status) == ("timer ticks on schedule (failed)", "failed")
    assert dict(check.parameters) == {"verdict": "failed", "bound": "every CPU's tick gap <= 762 ms",
                                      "measured": "gaps: CPU 0 none",
                                      "evidence": "CPU 0: no tick after #5 within 1762 ms"}


DECR = KnownFailure(("*>qemu-10.0/*/baseline-idle",), ("timer-ticks-on-schedule",), "no tick",
                    "the decrementer is not migrated", "a log")


def test_each_check_is_a_step_with_its_verdict_and_the_entry_that_explained_it(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.1, "boot": 2.5, "migrate": 0.6, "check": 1.8})
    record.migrations.append(_migration(tmp_path))
    record.checks += [
        CheckResult("destination is running", True, "running", "running", "query-status"),
        CheckResult("timer ticks on schedule", False, "every CPU's tick gap <= 762 ms", "gaps: CPU 0 none",
                    "CPU 0: no tick after #5 within 1762 ms"),
        not_measured("CPU progress on every CPU", "the guest did not answer",
                     cause="timer-ticks-on-schedule"),
        not_applicable("IPIs delivered between every pair of CPUs", "1 CPU online: no pair"),
    ]
    record.verdict = judge(record.checks, [DECR])
    checks = plan(record, ChecksFailed(record.checks))[-1]
    assert (checks.name, checks.status) == ("checks: 1 of 4 passed (1 failed, 1 not measured, 1 not "
                                            "applicable)", "failed")
    running, ticks, progress, ipis = checks.steps
    assert (running.name, running.status, running.message) == ("destination is running", "passed", "")
    assert (ticks.name, ticks.status) == (
        "timer ticks on schedule (failed, known: *>qemu-10.0/*/baseline-idle)", "failed")
    assert dict(ticks.parameters)["explained by"] == (f"{DECR.key}: cells *>qemu-10.0/*/baseline-idle; the "
                                                      "decrementer is not migrated")
    assert (progress.name, progress.status) == ("CPU progress on every CPU (not measured, known: "
                                                "*>qemu-10.0/*/baseline-idle)", "skipped")
    assert "cause: timer-ticks-on-schedule" in progress.message
    assert "evidence: the guest did not answer" in progress.message
    assert (ipis.name, ipis.status) == ("IPIs delivered between every pair of CPUs (not applicable)",
                                        "skipped")
    assert "explained by" not in dict(ipis.parameters)


def test_a_refused_migration_fails_its_hop_and_is_a_check_too(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.1, "boot": 2.5, "migrate": 0.4})
    error = MigrationFailed("destination QEMU exited with code 1 during migration: cpu/slb")
    record.checks = failure_checks(error)
    record.verdict = judge(record.checks, [])
    steps = plan(record, error)
    assert [s.status for s in steps] == ["passed", "passed", "failed", "failed"]
    completes, rest = steps[-1].steps
    assert (completes.name, completes.status) == ("migration completes (failed, unexplained)", "failed")
    assert dict(completes.parameters)["explained by"] == "unexplained"
    assert (rest.name, rest.status) == ("checks after the failure (not measured, unexplained)", "skipped")
    assert dict(rest.parameters)["cause"] == "migration-completes"


def test_an_impossible_cell_is_a_skipped_provision_step(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.2})
    [step] = plan(record, CellImpossible("qemu-10.0 (QEMU 10.0.13) has no machine type pseries-2.7"))
    assert step.status == "skipped"
    assert step.message == "qemu-10.0 (QEMU 10.0.13) has no machine type pseries-2.7"


def test_a_silent_guest_at_boot_fails_the_boot_step(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.2, "boot": 60.0}, ("src-serial.log",))
    steps = plan(record, GuestUnresponsive("no hello from the agent in 60 s"))
    assert [(s.name, s.status) for s in steps] == [("provision builds and the golden guest", "passed"),
                                                   ("start QEMU and boot the guest", "failed")]


def test_steps_land_on_the_test_back_to_back_with_their_attachments(tmp_path: Path) -> None:
    record = _record(tmp_path, {"provision": 0.1, "boot": 2.5, "migrate": 0.6, "check": 1.2},
                     ("src-argv.txt", "stream-src-dst.summary.txt"))
    record.migrations.append(_migration(tmp_path))
    test = SimpleNamespace(steps=[])
    add_to_test(test, plan(record, None))
    provision, boot, hop = test.steps
    assert provision.stop == boot.start and boot.stop == hop.start
    assert hop.stop - provision.start == 3200
    assert hop.attachments[0].source.endswith("-attachment.txt")
    assert boot.steps[0].attachments[0].name == "source command line"
    assert [p.name for p in hop.parameters][:3] == ["status", "total time", "downtime"]
