"""A cell's Allure steps, built after the fact from its :class:`~harness.runner.cell.CellRecord`.

The runner records phases, QEMU's figures per migration, the checks and the
evidence files, not a timeline, so the steps are laid out in the order a
cell runs them (provision, boot, each migration hop, the checks) with each
phase's recorded duration, ending when the cell ended. The step an error
belongs to is known from its type (a refused migration, a broken invariant,
an impossible cell) and otherwise from how far the cell got.

The checks step has one step per check with its verdict: passed, failed, not
measured (Allure ``skipped``, with the reason) or not applicable (``skipped``
too, named so); each failed or not measured check says which known_failures
entry explained it (its key, cells and reason) or that nothing did. A
failure that ended the scenario early is a check of its own there
(``migration completes``, ...), followed by what it left unmeasured.

The cell's own files (the harness's log of what it did, :mod:`harness.runner.celllog`) are
attachments of the test itself, not of a step: :func:`cell_attachments`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import allure_commons
from allure_commons.model2 import Attachment, Parameter, StatusDetails, TestStepResult

from harness.checks.result import CheckResult, Verdict
from harness.checks.verdict import CheckVerdict
from harness.errors import CheckFailed, ChecksFailed, MigrationFailed, MigrationTimeout
from harness.matrix.model import KnownFailure
from harness.migration.run import STREAM_PREFIX, MigrationResult
from harness.runner.cell import CellRecord
from harness.runner.celllog import LOG_NAME
from harness.runner.roles import ROLES, Hop

PARAMETER_CHARS = 300
HOP_OVERHEAD_S = 0.1
"""Migrate-phase time a completed migration spends outside QEMU's own timing (QMP set-up, the
relay; 10 to 50 ms measured), so that three hops do not read as a fourth that did not complete."""
_ROLE_FILES = (("argv.txt", "command line"), ("qemu.log", "QEMU output"), ("qmp.log", "QMP transcript"),
               ("serial.log", "serial console"), ("corrupt-lines.txt", "agent lines with a bad CRC"),
               ("info-mtree.txt", "memory map (info mtree)"),
               ("info-ramblock.txt", "RAM blocks (info ramblock)"))
_CELL_FILES = ((LOG_NAME, "harness log"),)
"""The cell's files that belong to no one step: attached to the test, named "<what> (<file>)"."""


@dataclass(frozen=True)
class Attach:
    name: str
    path: Path | None = None
    text: str = ""
    mime: str = "text/plain"


@dataclass(frozen=True)
class Step:
    name: str
    status: str
    """passed, failed, broken or skipped (Allure's)."""
    message: str = ""
    seconds: float = 0.0
    parameters: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attach, ...] = ()
    steps: tuple[Step, ...] = ()


def plan(record: CellRecord, error: BaseException | None) -> list[Step]:
    """The cell's steps; ``error`` is what ended the test body (None when it passed)."""
    where = _where(record, error)
    ended = _Ended(where, _status(error), str(error).strip() if error is not None else "")
    p = record.parameters
    booted = "boot" in record.phases  # else the cell ended while provisioning, whatever the error
    steps = [Step("provision builds and the golden guest",
                  *(ended.at("provision") if booted else (ended.status, ended.message)),
                  seconds=record.phases.get("provision", 0.0),
                  parameters=_params(("source build", p.get("source build", record.cell.src)),
                                     ("destination build", p.get("destination build", record.cell.dst)),
                                     ("guest image", p.get("guest image", ""))))]
    if not booted:
        return steps
    setup = _params(("machine", p.get("machine", "")), ("firmware", p.get("firmware", "")),
                    ("CPUs", p.get("CPUs", "")))
    steps.append(Step("start QEMU and boot the guest", *ended.at("boot"), seconds=record.phases["boot"],
                      parameters=setup, steps=tuple(_qemu_steps(record))))
    steps += _hops(record, ended)
    if where == "checks" or record.checks:
        steps.append(_checks(record, error, ended))
    return steps


@dataclass(frozen=True)
class _Ended:
    """Where the cell ended, how and why: the step of that part carries the status and message."""

    where: str
    status: str
    message: str

    def at(self, part: str) -> tuple[str, str]:
        """(status, message) of the step for ``part``."""
        return (self.status, self.message) if part == self.where else ("passed", "")


def _where(record: CellRecord, error: BaseException | None) -> str:
    """Which part of the cell ``error`` ended: provision, boot, migration or checks."""
    if error is None:
        return ""
    if isinstance(error, (CheckFailed, ChecksFailed)):
        return "checks"
    if isinstance(error, (MigrationFailed, MigrationTimeout)):
        return "migration"
    if "boot" not in record.phases:
        return "provision"
    if "migrate" not in record.phases:
        return "boot"
    return "checks"


def _status(error: BaseException | None) -> str:
    if error is None:
        return "passed"
    if isinstance(error, AssertionError):  # ProductFailure: QEMU or the guest misbehaved
        return "failed"
    if type(error).__name__ in ("Skipped", "CellImpossible"):
        return "skipped"
    return "broken"


def _qemu_steps(record: CellRecord) -> list[Step]:
    """One step per QEMU the cell started, with that process's own files."""
    steps = []
    for name, role in ROLES.items():
        files = [Attach(f"{role.title} {what}", path) for suffix, what in _ROLE_FILES
                 if (path := record.evidence / f"{name}-{suffix}").exists()]
        if files:
            build = record.cell.dst if role.like == "dst" else record.cell.src
            steps.append(Step(f"{role.title} QEMU ({build})", "passed", attachments=tuple(files)))
    return steps


def _hops(record: CellRecord, ended: _Ended) -> list[Step]:
    """A step per recorded migration with QEMU's figures, and the hop that failed, if one did."""
    steps = []
    for number, migration in enumerate(record.migrations, 1):
        steps.append(Step(_hop_name(number, migration), "passed", seconds=migration.wall_s,
                          parameters=_figures(migration), attachments=_stream_files(record, migration.hop)))
    number = len(record.migrations) + 1
    spent = max(record.phases.get("migrate", 0.0) - sum(m.wall_s for m in record.migrations), 0.0)
    if ended.where == "migration":
        hop = record.hops[number - 1] if len(record.hops) >= number else None  # attempted, not completed
        steps.append(Step(f"migration {number}" + (f": {hop.title}" if hop else ""), *ended.at("migration"),
                          seconds=spent, attachments=_stream_files(record, hop) if hop else ()))
    elif spent > 0.05 + HOP_OVERHEAD_S * len(record.migrations):
        steps.append(Step(f"migration {number}: did not complete (QEMU's figures not recorded; the "
                          "checks say what the scenario expected)", "passed", seconds=spent))
    return steps


def _hop_name(number: int, migration: MigrationResult) -> str:
    f = migration.figures
    return (f"migration {number}: {migration.hop.title} ({f.status}, "
            f"{f.total_time_ms} ms total, {f.downtime_ms} ms downtime)")


def _figures(migration: MigrationResult) -> tuple[tuple[str, str], ...]:
    """QEMU's own account (``query-migrate`` on the source)."""
    f = migration.figures
    ram = f.raw.get("ram", {}) if isinstance(f.raw.get("ram"), dict) else {}
    mbps = ram.get("mbps")
    return _params(
        ("status", f.status), ("total time", f"{f.total_time_ms} ms"), ("downtime", f"{f.downtime_ms} ms"),
        ("setup time", f"{f.setup_time_ms} ms"),
        ("transferred", f"{f.transferred_bytes / 2**20:.1f} MiB of {f.ram_total_bytes / 2**20:.0f} MiB RAM"),
        ("throughput", f"{float(mbps):.0f} Mbit/s" if isinstance(mbps, (int, float)) else "not reported"),
        ("stream recorded", f"{migration.stream_bytes} bytes" if migration.stream else "not recorded"),
    )


def _stream_files(record: CellRecord, hop: Hop) -> tuple[Attach, ...]:
    stem = f"{STREAM_PREFIX}{hop.src}-{hop.dst}"
    found = [Attach(f"stream summary ({stem})", record.evidence / f"{stem}.summary.txt"),
             Attach("stream diff: what the receiving build cannot load, worst first",
                    record.evidence / f"{stem}.diff.txt")]
    return tuple(a for a in found if a.path is not None and a.path.exists())


def _checks(record: CellRecord, error: BaseException | None, ended: _Ended) -> Step:
    """One step per check, with its verdict and the entry that explained it. A check that
    failed before the checks ran and that the record lacks (a stalled CPU right after a hop,
    reported before verdicts per check) is the failed step itself."""
    verdicts = list(record.verdict.checks) if record.verdict is not None else [
        CheckVerdict(c) for c in record.checks]
    if isinstance(error, CheckFailed) and all(v.check.invariant != error.invariant for v in verdicts):
        verdicts.append(CheckVerdict(CheckResult(error.invariant, False, error.before, error.after,
                                                 error.evidence)))
    children = [_check(v, judged=record.verdict is not None) for v in verdicts]
    attachments: tuple[Attach, ...] = ()
    if record.observations is not None:
        attachments = (Attach("observations (probes, heartbeats, timebase watcher)",
                              text=_json(record.observations), mime="application/json"),)
    status, message = ended.at("checks")
    if ended.where != "checks":  # the checks' own verdict: a failed check fails the step
        status = _worst(c.status for c in children)
        message = ""
    counts = {v: sum(c.check.verdict is v for c in verdicts) for v in Verdict}
    name = f"checks: {counts[Verdict.PASSED]} of {len(children)} passed" if children else "checks"
    shown = ", ".join(f"{counts[v]} {v.value}" for v in Verdict if v is not Verdict.PASSED and counts[v])
    name += f" ({shown})" if shown else ""
    if not children and status != "passed":
        name = "checks (did not finish)"
    return Step(name, status, message, seconds=record.phases.get("check", 0.0), attachments=attachments,
                steps=tuple(children))


_SEVERITY = ("passed", "skipped", "broken", "failed")


def _worst(statuses: Any) -> str:
    return max(statuses, key=_SEVERITY.index, default="passed")


_STEP_STATUS = {Verdict.PASSED: "passed", Verdict.FAILED: "failed", Verdict.NOT_MEASURED: "skipped",
                Verdict.NOT_APPLICABLE: "skipped"}
"""Allure has no status for a check that could not measure, or had nothing to: both are skipped,
and the step's name says which."""


def _check(verdict: CheckVerdict, judged: bool = True) -> Step:
    """A check's step; ``judged``: the cell's verdict says what explained it (else nothing is
    said about entries)."""
    check = verdict.check
    bound = isinstance(check.before, str) and "<=" in check.before
    first = "bound" if bound else "before"
    measured = "measured" if check.verdict in (Verdict.PASSED, Verdict.FAILED) else "after"
    params = _params(("verdict", check.verdict.value), (first, _text(check.before)),
                     (measured, _text(check.after)), ("evidence", check.evidence),
                     ("cause", _cause(check)), ("explained by", _entry(verdict) if judged else ""))
    name = check.invariant
    if check.verdict is not Verdict.PASSED:
        said = (f", {_known(verdict.explained_by)}" if verdict.explained_by
                else ", unexplained" if check.counts_against and judged else "")
        name += f" ({check.verdict.value}{said})"
    message = "" if check.verdict is Verdict.PASSED else "\n".join(f"{k}: {v}" for k, v in params)
    return Step(name, _STEP_STATUS[check.verdict], message, parameters=params)


def _cause(check: CheckResult) -> str:
    if check.verdict is not Verdict.NOT_MEASURED:
        return ""
    return check.cause or "nothing in the cell explains it"


def _known(entry: KnownFailure) -> str:
    return f"known: {entry.cells[0]}"


def _entry(verdict: CheckVerdict) -> str:
    """The entry that explained a failed or not measured check: key, cells and reason; or
    ``unexplained``."""
    if not verdict.check.counts_against:
        return ""
    entry = verdict.explained_by
    if entry is None:
        return "unexplained"
    return f"{entry.key}: cells {', '.join(entry.cells)}; {entry.reason}"


def _params(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v[:PARAMETER_CHARS]) for k, v in pairs if v)


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(_plain(value), default=str)


def _json(value: object) -> str:
    return json.dumps(_plain(value), indent=1, default=str)


def _plain(value: object) -> object:
    """Dataclasses, mappings and tuples as plain JSON-able values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def cell_attachments(evidence: Path) -> tuple[Attach, ...]:
    """The cell's own files found in its evidence directory (``CellRecord.evidence``;
    :data:`_CELL_FILES`), for :func:`attach_to_test`: ``harness log (harness.log)`` whenever the
    cell wrote one."""
    return tuple(Attach(f"{what} ({name})", path) for name, what in _CELL_FILES
                 if (path := evidence / name).exists())


def attach_to_test(test: Any, attachments: tuple[Attach, ...]) -> None:
    """Attach files to allure-pytest's current test result itself (not to a step), written
    through Allure's loggers as the steps' are."""
    for attach in attachments:
        written = _write(attach)
        if written is not None:
            test.attachments.append(written)


def add_to_test(test: Any, steps: list[Step]) -> None:
    """Append ``steps`` to allure-pytest's current test result, laid out back to back so that
    the last ends now; attachments are written through Allure's loggers (a full disk loses
    the item, not the run)."""
    start = int(time.time() * 1000) - int(sum(s.seconds for s in steps) * 1000)
    for step in steps:
        result, start = _model(step, start)
        test.steps.append(result)


def _model(step: Step, start: int) -> tuple[Any, int]:
    stop = start + int(step.seconds * 1000)
    children = []
    at = start
    for child in step.steps:
        model, at = _model(child, at)
        children.append(model)
    return TestStepResult(
        name=step.name, status=step.status, start=start, stop=stop,
        statusDetails=StatusDetails(message=step.message) if step.message else None,
        parameters=[Parameter(name=k, value=v) for k, v in step.parameters],
        attachments=[a for a in (_write(a) for a in step.attachments) if a is not None],
        steps=children,
    ), stop


def _write(attach: Attach) -> Any:
    extension = "json" if attach.mime == "application/json" else "txt"
    file_name = f"{uuid4()}-attachment.{extension}"
    hook = allure_commons.plugin_manager.hook
    if attach.path is not None:
        hook.report_attached_file(source=str(attach.path), file_name=file_name)
    else:
        hook.report_attached_data(body=attach.text, file_name=file_name)
    return Attachment(name=attach.name, source=file_name, type=attach.mime)
