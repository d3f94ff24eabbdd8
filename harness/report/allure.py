"""Allure labels, parameters and attachments for a cell; environment and categories per run."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path

import allure

from harness.cell import CellRecord
from harness.report.results import RUN_FILE, RunResult

_TEXT_EVIDENCE = {
    "src-serial.log": "source serial console",
    "dst-serial.log": "destination serial console",
    "src-qmp.log": "source QMP transcript",
    "dst-qmp.log": "destination QMP transcript",
    "src-qemu.log": "source QEMU output",
    "dst-qemu.log": "destination QEMU output",
    "src-corrupt-lines.txt": "source console: agent lines with a bad CRC",
    "dst-corrupt-lines.txt": "destination console: agent lines with a bad CRC",
    "src-argv.txt": "source command line",
    "dst-argv.txt": "destination command line",
    "back-serial.log": "return destination serial console",
    "back-qmp.log": "return destination QMP transcript",
    "back-qemu.log": "return destination QEMU output",
    "back-argv.txt": "return destination command line",
}

def label_cell(record: CellRecord, repeat: int) -> None:
    """Title, feature, story and parameters: set first, so even a broken cell is findable.

    Repeated runs of a cell have the same parameters (the run number is an
    excluded one), so Allure shows them as retries of one test.
    """
    cell = record.cell
    allure.dynamic.title(cell.id)
    allure.dynamic.feature(cell.scenario)
    allure.dynamic.story(cell.variant or cell.machine)
    allure.dynamic.parameter("cell", cell.id)  # the pytest parameter, shown by id, not repr
    if repeat > 1:
        allure.dynamic.parameter("attempt", f"{record.attempt}/{repeat}", excluded=True)
    allure.dynamic.parameter("source", cell.src)
    allure.dynamic.parameter("destination", cell.dst)
    allure.dynamic.parameter("machine type", cell.machine)
    allure.dynamic.parameter("scenario", cell.scenario)
    if cell.variant:
        allure.dynamic.parameter("variant", cell.variant)


def attach_cell(record: CellRecord) -> None:
    """Everything the cell left as evidence, as Allure attachments."""
    for name, value in record.parameters.items():
        allure.dynamic.parameter(name, value)
    for filename, title in _TEXT_EVIDENCE.items():
        path = record.evidence / filename
        if path.exists():
            allure.attach.file(str(path), name=title, attachment_type=allure.attachment_type.TEXT)
    for path in sorted(record.evidence.glob("stream-*.summary.txt")):
        allure.attach.file(str(path), name=f"stream summary: {path.stem.removesuffix('.summary')}",
                           attachment_type=allure.attachment_type.TEXT)
    for path in sorted(record.evidence.glob("stream-*.diff.txt")):
        allure.attach.file(str(path), name=f"stream diff against the destination's build: {path.stem}",
                           attachment_type=allure.attachment_type.TEXT)
    if record.observations is not None:
        _attach_json("observations (probes, heartbeats, timebase watcher)", record.observations)
    for number, migration in enumerate(record.migrations, 1):
        _attach_json(f"migration {number} figures (query-migrate)", migration.figures.raw)
    if record.checks:
        _attach_json("checks", record.checks)
    _attach_json("phase times (s)", {k: round(v, 3) for k, v in record.phases.items()})
    if record.not_kept:
        allure.attach("\n".join(record.not_kept), name="evidence not kept (reports filesystem)",
                      attachment_type=allure.attachment_type.TEXT)


def finish_results(results: Path, flaky: set[str], run: Mapping[str, str]) -> None:
    """At the end of a run: label every result with its outcome and what failed (what the
    report's categories group by), flag known and flaky ones the way Allure shows them, and
    say which run wrote the directory."""
    for path in results.glob("*-result.json"):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue  # torn by a full disk; `goldmig report` names it
        result = RunResult.from_json(data)
        labels = [x for x in data.get("labels", []) if x.get("name") not in ("outcome", "failure")]
        outcome = "flaky" if result.cell in flaky else result.outcome
        labels.append({"name": "outcome", "value": outcome})
        if result.failure:
            labels.append({"name": "failure", "value": result.failure})
        data["labels"] = labels
        details = data.setdefault("statusDetails", {})
        for flag, on in (("known", result.outcome == "known"), ("flaky", result.cell in flaky)):
            if on:
                details[flag] = True
            else:
                details.pop(flag, None)
        _replace(path, json.dumps(data))
    _replace(results / RUN_FILE, json.dumps(dict(run)))


def write_environment(results: Path, entries: Mapping[str, str]) -> None:
    """environment.properties in the results directory."""
    results.mkdir(parents=True, exist_ok=True)
    lines = [f"{_escape(k)}={_escape(v)}" for k, v in sorted(entries.items())]
    lines.append(f"host={_escape(platform.node())} {platform.machine()} {platform.release()}")
    (results / "environment.properties").write_text("\n".join(lines) + "\n")


def _attach_json(name: str, value: object) -> None:
    allure.attach(json.dumps(_plain(value), indent=1, default=str), name=name,
                  attachment_type=allure.attachment_type.JSON)


def _plain(value: object) -> object:
    """Dataclasses, mappings and tuples as plain JSON-able values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _replace(path: Path, text: str) -> None:
    """Write whole or not at all."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", " ").replace("=", "\\=").replace(":", "\\:")
