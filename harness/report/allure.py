"""Allure labels, parameters, steps and attachments for a cell; outcome labels, environment and
run id for a run's results.

A cell's history identity is its id: the ``cell`` parameter is the only one
Allure counts (build versions, guest image, hosts and the attempt number are
shown but excluded), so a Debian update or a new guest image does not cut a
cell off from its past.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import allure
import allure_commons
from allure_commons.model2 import Label, Parameter, StatusDetails

from harness.report.allure_steps import add_to_test, attach_to_test, cell_attachments, plan
from harness.report.checklist import against
from harness.report.results import CHECKS_LABEL, RUN_FILE, VERDICT_LABEL, RunResult
from harness.report.run_summary import CellOutcome
from harness.runner.cell import CellRecord
from harness.scenarios import SCENARIOS


def current_test() -> Any:
    """allure-pytest's result for the running test, or None when Allure is off."""
    for plugin in allure_commons.plugin_manager.get_plugins():
        logger = getattr(plugin, "allure_logger", None)
        if logger is not None:
            return logger.get_test(None)
    return None


def label_cell(record: CellRecord, repeat: int) -> None:
    """Title, description, labels and parameters: set first, so even a broken cell is findable.

    Repeated runs of a cell have the same counted parameters (the attempt is
    excluded), so Allure shows them as retries of one test.
    """
    cell = record.cell
    scenario = cell.id.split("/", 2)[-1] + (f" ({cell.driver})" if cell.driver != "qemu" else "")
    allure.dynamic.title(cell.id)
    declared = SCENARIOS[cell.scenario]
    variant = declared.variant(cell.variant).description if cell.variant else ""
    allure.dynamic.description(f"{declared.name}: {declared.description}"
                               + (f"; {variant}" if variant else ""))
    allure.dynamic.parent_suite(scenario)
    allure.dynamic.suite(cell.machine)
    allure.dynamic.feature(cell.scenario)
    allure.dynamic.story(cell.variant or cell.scenario)
    for name, value in (("scenario", scenario), ("machine", cell.machine), ("source", cell.src),
                        ("destination", cell.dst), ("driver", cell.driver)):
        allure.dynamic.label(name, value)
    test = current_test()
    if test is None:
        return
    _parameter(test, "cell", cell.id, excluded=False)
    if repeat > 1:
        _parameter(test, "attempt", f"{record.attempt}/{repeat}", excluded=True)


def attach_cell(record: CellRecord, error: BaseException | None) -> None:
    """The cell's steps (built from its record), its run parameters and its phase times."""
    test = current_test()
    if test is None:
        return
    for name, value in record.parameters.items():
        _parameter(test, name, value, excluded=True)
    add_to_test(test, plan(record, error))
    attach_to_test(test, cell_attachments(record.evidence))
    allure.attach(json.dumps({k: round(v, 3) for k, v in record.phases.items()}, indent=1),
                  name="phase times (s)", attachment_type=allure.attachment_type.JSON)
    if record.not_kept:
        allure.attach("\n".join(record.not_kept), name="evidence not kept (reports filesystem)",
                      attachment_type=allure.attachment_type.TEXT)


def mark_result(outcome: CellOutcome, fixed_message: str) -> None:
    """The running test's goldmig verdict, for the report: its outcome (Allure's status cannot
    tell a fixed cell from a failed one, nor a known one from an impossible one) and its failed
    and not measured checks with their entries, as labels; a fixed cell's message says which
    entry to review (Allure has no exception to show for a cell that passed)."""
    test = current_test()
    if test is None:
        return
    test.labels = [x for x in test.labels if x.name not in (VERDICT_LABEL, CHECKS_LABEL)]
    test.labels.append(Label(name=VERDICT_LABEL, value=outcome.outcome))
    bad = against(outcome.checks)
    if bad:
        test.labels.append(Label(name=CHECKS_LABEL, value=json.dumps(bad)))
    if fixed_message:
        trace = test.statusDetails.trace if test.statusDetails else None
        test.statusDetails = StatusDetails(message=fixed_message, trace=trace)


def _parameter(test: Any, name: str, value: str, excluded: bool) -> None:
    """Set a parameter as plain text (allure's dynamic API shows a Python repr)."""
    for parameter in test.parameters:
        if parameter.name == name:
            parameter.value, parameter.excluded = value, excluded or None
            return
    test.parameters.append(Parameter(name=name, value=value, excluded=excluded or None))


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
        labels = [x for x in data.get("labels", []) if x.get("name") not in ("outcome", "failure", "entry")]
        outcome = "flaky" if result.cell in flaky else result.outcome
        labels.append({"name": "outcome", "value": outcome})
        if result.failure:
            labels.append({"name": "failure", "value": result.failure})
        if result.entry:
            labels.append({"name": "entry", "value": result.entry})
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
