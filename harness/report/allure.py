"""Allure labels, parameters and attachments for a cell; environment and categories per run."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path

import allure

from harness.cell import CellRecord

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

CATEGORIES = [
    {"name": "Known failures (declared in matrix.yaml)", "matchedStatuses": ["skipped"],
     "messageRegex": ".*known failure.*"},
    {"name": "Impossible cells", "matchedStatuses": ["skipped"], "messageRegex": ".*has no machine type.*"},
    {"name": "Known failure now passing", "matchedStatuses": ["failed", "broken"],
     "messageRegex": ".*known failure now passes.*"},
    {"name": "Guest-visible invariant broken", "matchedStatuses": ["failed"],
     "traceRegex": ".*CheckFailed.*"},
    {"name": "Migration failed in QEMU", "matchedStatuses": ["failed"],
     "traceRegex": ".*(MigrationFailed|MigrationTimeout|QemuCrashed).*"},
    {"name": "Guest unresponsive", "matchedStatuses": ["failed"], "traceRegex": ".*GuestUnresponsive.*"},
    {"name": "QEMU refused a command or stopped answering", "matchedStatuses": ["failed"],
     "traceRegex": ".*(QmpCommandError|QemuUnresponsive).*"},
    {"name": "Harness errors (our bug or environment)", "matchedStatuses": ["broken"]},
]


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


def mark_flaky(results: Path, cells: set[str]) -> None:
    """Flag every result of a cell whose outcome changed between runs as flaky (Allure's own
    flag, shown on the result and counted in the overview)."""
    if not cells:
        return
    for path in results.glob("*-result.json"):
        data = json.loads(path.read_text())
        if data.get("name") in cells:
            data.setdefault("statusDetails", {})["flaky"] = True
            path.write_text(json.dumps(data))


def write_environment(results: Path, entries: Mapping[str, str]) -> None:
    """environment.properties and categories.json in the results directory."""
    results.mkdir(parents=True, exist_ok=True)
    lines = [f"{_escape(k)}={_escape(v)}" for k, v in sorted(entries.items())]
    lines.append(f"host={_escape(platform.node())} {platform.machine()} {platform.release()}")
    (results / "environment.properties").write_text("\n".join(lines) + "\n")
    (results / "categories.json").write_text(json.dumps(CATEGORIES, indent=1))


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


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", " ").replace("=", "\\=").replace(":", "\\:")
