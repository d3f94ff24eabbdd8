"""A per-patch job's verdict: each candidate cell against its base twin, check by check.

The candidate's cell ``qemu-7.2>candidate/pseries-9.2/baseline-idle`` has the twin
``qemu-7.2>base/pseries-9.2/baseline-idle``. A check that passed with the base and failed or
was not measured with the candidate **breaks**; the reverse **fixes**; failing both ways is
the **same failure**, passing both the **same pass**. A check whose verdict differs between
runs of one build is **flaky**, never a break. Known failures play no part where the base
ran: the base is the reference. A candidate cell whose base twin could not run (skipped) is
judged alone, by its own outcome.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree import ElementTree

from harness.report.run_summary import CellOutcome

CANDIDATE = "candidate"
BASE = "base"
FAILING = frozenset({"failed", "not measured"})
CHANGES = ("breaks", "fixes", "flaky", "same failure", "same pass")
DIFFERS = CHANGES[:3]
"""The changes named check by check (summary, junit, the report); the rest are counted."""
ALONE = "alone"
"""The change of a candidate cell whose base twin could not run: judged by its own outcome."""


@dataclass(frozen=True)
class CheckChange:
    cell: str
    """The candidate's cell."""
    check: str
    change: str
    """One of :data:`CHANGES`, or ``alone`` for a candidate cell whose base could not run."""
    base: tuple[str, ...]
    """The check's verdicts with the base, one per run."""
    candidate: tuple[str, ...]
    measured: str
    """What the candidate's last run measured."""

    def line(self) -> str:
        return (f"{self.change.upper():13} {self.cell}: {self.check}: base {_runs(self.base)}, "
                f"candidate {_runs(self.candidate)}: {self.measured[:160]}")


def _runs(verdicts: tuple[str, ...]) -> str:
    """A check's verdicts over runs: ``failed x3``; ``no such check`` where a build never made
    it (the machine state names only the fields that differ)."""
    if not verdicts:
        return "no such check"
    if len(set(verdicts)) > 1:
        return "/".join(verdicts)
    return verdicts[0] + (f" x{len(verdicts)}" if len(verdicts) > 1 else "")


def twin(cell: str) -> str | None:
    """The base twin of a candidate cell id (None for a cell without the candidate)."""
    driver, sep, rest = cell.rpartition(":")
    pair, _, tail = rest.partition("/")
    src, _, dst = pair.partition(">")
    if CANDIDATE not in (src, dst):
        return None
    swapped = ">".join(BASE if b == CANDIDATE else b for b in (src, dst))
    return f"{driver}{sep}{swapped}/{tail}"


def compare(outcomes: Iterable[CellOutcome]) -> list[CheckChange]:
    """Every check of every candidate cell against its twin (all runs of each, ``--repeat``)."""
    runs: dict[str, list[dict[str, str]]] = defaultdict(list)
    measured: dict[tuple[str, str], str] = {}
    ran: dict[str, list[str]] = defaultdict(list)
    for o in outcomes:
        ran[o.cell].append(o.outcome)
        runs[o.cell].append({item["id"]: item["verdict"] for item in o.checks})
        for item in o.checks:
            measured[(o.cell, item["id"])] = item.get("measured", "")
    changes = []
    for cell in sorted(ran):
        base_cell = twin(cell)
        if base_cell is None:
            continue
        mine, theirs = runs[cell], runs.get(base_cell, [])
        alone = base_cell not in ran or all(o == "skipped" for o in ran[base_cell])
        for check in _checks([*mine, *theirs]):
            base, cand = _verdicts(theirs, check), _verdicts(mine, check)
            change = ALONE if alone else _change(base, cand, len(ran[base_cell]), len(ran[cell]))
            if change is not None:
                changes.append(CheckChange(cell, check, change, base, cand, measured.get((cell, check), "")))
    return changes


_FIELD = re.compile(r"machine-state-(?!across-hop-)(?:.+?)(?P<hop>-across-hop-\d+)?")
_WHOLE = re.compile(r"machine-state(?P<hop>-across-hop-\d+)?")


def _checks(runs: list[dict[str, str]]) -> list[str]:
    """The checks to compare: every check either build made, but a hop's whole machine-state
    check when some run named its fields (they carry the comparison, field by field)."""
    checks = {c for run in runs for c in run}
    named = {m.group("hop") or "" for c in checks if (m := _FIELD.fullmatch(c))}
    return sorted(c for c in checks if not ((m := _WHOLE.fullmatch(c)) and (m.group("hop") or "") in named))


def _verdicts(runs: list[dict[str, str]], check: str) -> tuple[str, ...]:
    """``check``'s verdict in each run that made it. The machine state names a field only where
    it differs, so in a run that compared the hop's machine state and did not name this field,
    the field was equal: passed."""
    field = _FIELD.fullmatch(check)
    out = []
    for run in runs:
        if check in run:
            out.append(run[check])
        elif field and _compared(run, field.group("hop") or ""):
            out.append("passed")
    return tuple(out)


def _compared(run: dict[str, str], hop: str) -> bool:
    """The run compared the machine state across ``hop`` (suffix, empty for a single hop): every
    field equal (``machine-state`` passed) or some named as differing."""
    if run.get(f"machine-state{hop}") == "passed":
        return True
    return any(verdict == "failed" and (m := _FIELD.fullmatch(check)) is not None
               and (m.group("hop") or "") == hop for check, verdict in run.items())


def _change(base: tuple[str, ...], cand: tuple[str, ...], base_runs: int, cand_runs: int) -> str | None:
    """The change of one check, given its verdicts in each build's runs (a check is missing from
    the runs of a build that did not make it: a check named after a hop the guest did not answer
    for, say); ``*_runs``: how many times each build's cell ran."""
    judged = [v for v in (*base, *cand) if v != "not applicable"]
    if not judged:
        return None
    base_fails = {v in FAILING for v in base if v != "not applicable"}
    cand_fails = {v in FAILING for v in cand if v != "not applicable"}
    sometimes = ((True in base_fails and 0 < len(base) < base_runs)
                 or (True in cand_fails and 0 < len(cand) < cand_runs))
    applicable = [{v == "not applicable" for v in verdicts} for verdicts in (base, cand)]
    if len(base_fails) > 1 or len(cand_fails) > 1 or sometimes or any(len(a) > 1 for a in applicable):
        return "flaky"  # the verdict, or whether the check was made or applied, varied between runs
    if not base_fails or not cand_fails:  # measured on one side only (a check the other lacks)
        return "breaks" if cand_fails == {True} else "fixes" if base_fails == {True} else "same pass"
    if base_fails == cand_fails:
        return "same failure" if True in base_fails else "same pass"
    return "breaks" if True in cand_fails else "fixes"


def differing(changes: Iterable[CheckChange]) -> list[str]:
    """The candidate cells with a break or a fix: the ones to run again before calling it."""
    return sorted({c.cell for c in changes if c.change in ("breaks", "fixes")})


def summary(changes: list[CheckChange], alone: dict[str, str]) -> list[str]:
    """The job's lines: the counts first, then every break, fix and flaky check, then the
    candidate cells judged alone (``alone``: cell -> outcome) that did not pass."""
    count = {name: sum(c.change == name for c in changes) for name in CHANGES}
    pairs = len({c.cell for c in changes if c.change != ALONE})
    lines = [f"goldmig patch: breaks {count['breaks']}, fixes {count['fixes']} (flaky {count['flaky']}, "
             f"same failure {count['same failure']}, same pass {count['same pass']}; checks of {pairs} "
             f"cell pairs, candidate against base)"]
    lines += [c.line() for c in changes if c.change in DIFFERS]
    lines += [f"ALONE         {cell}: {outcome} (its base twin could not run; judged by the known "
              "failures)" for cell, outcome in sorted(alone.items()) if outcome not in ("passed", "known")]
    return lines


def write_junit(changes: list[CheckChange], path: str) -> None:
    """One testcase per cell and check whose verdict differs from the base (a break is a
    failure, a flaky check a skip), so CI shows exactly what the patch changed."""
    shown = [c for c in changes if c.change in DIFFERS]
    suite = ElementTree.Element("testsuite", name="goldmig patch", tests=str(len(shown)),
                                failures=str(sum(c.change == "breaks" for c in shown)))
    for c in shown:
        case = ElementTree.SubElement(suite, "testcase", classname=c.cell, name=c.check)
        if c.change == "breaks":
            ElementTree.SubElement(case, "failure", message=c.line()).text = c.measured
        elif c.change == "flaky":
            ElementTree.SubElement(case, "skipped", message=c.line())
        else:
            ElementTree.SubElement(case, "system-out").text = c.line()
    ElementTree.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)
