"""The matrix view: for each scenario and machine type, source builds by destination builds,
each square coloured by the cell's outcome (goldmig's, as the run's summary gives it: a fixed
cell is FIXED?, not FAIL), its short reason and checks on hover, linked to its Allure page.

Above the grids: the run summary's own count line and legend, and what Allure's overview ring
counts (:class:`Ring`), so that the three views can be told apart and matched.

Plain HTML and CSS (no script), written beside the Allure report's index.html.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from html import escape

from harness.report.history import Changes
from harness.report.results import CellResult, summary_outcomes
from harness.report.run_summary import _LABEL as LABEL  # the summary's table: one name per outcome, one place
from harness.report.run_summary import OUTCOMES, summary_lines

_MEANING = {"passed": "passed", "failed": "QEMU or the guest misbehaved",
            "broken": "the harness or the environment is at fault", "known": "a declared known failure",
            "fixed": "a known failure that passed: review its entry",
            "flaky": "the outcome changed between runs",
            "skipped": "impossible: a build lacks the machine type or what the scenario needs"}
_EXPLAINED = ("failed", "broken", "fixed", "flaky")
KVM_PREFIX = "kvm:"
"""A KVM cell's id is its TCG twin's with this prefix (:class:`harness.matrix.model.Cell`)."""
"""Outcomes whose reason is listed under the grid (hover gives every square's)."""
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2937; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
h3 { font-size: 14px; margin: 16px 0 6px; font-weight: 600; }
a { color: inherit; } .meta { color: #6b7280; }
table.grid { border-collapse: collapse; margin: 0 0 8px; }
.grid th, .grid td { border: 1px solid #d1d5db; padding: 4px 10px; text-align: center; }
.grid th { background: #f3f4f6; font-weight: 600; } .grid th.corner { font-weight: 400; color: #6b7280; }
.grid td a { display: block; text-decoration: none; font-weight: 600; min-width: 56px; }
.o-passed { background: #16a34a; color: #fff; } .o-failed { background: #dc2626; color: #fff; }
.o-broken { background: #ea580c; color: #fff; } .o-known { background: #94a3b8; color: #fff; }
.o-fixed { background: #0d9488; color: #fff; } .o-flaky { background: #7c3aed; color: #fff; }
.o-skipped { background: #e5e7eb; color: #4b5563; } .o-none { color: #9ca3af; }
.legend span { display: inline-block; padding: 2px 8px; margin: 0 6px 4px 0; border-radius: 3px; }
ul.changes { margin: 4px 0; padding-left: 20px; } .changes li { margin: 2px 0; }
ul.notes { list-style: none; padding: 0; margin: 0 0 8px; font-size: 13px; }
.notes li { margin: 2px 0; } .notes span { padding: 0 6px; border-radius: 3px; font-weight: 600; }
"""


def render(cells: list[CellResult], changes: Changes | None, title: str) -> str:
    """The whole page."""
    counts = Counter(c.outcome for c in cells)
    legend = "".join(f'<span class="o-{o}" data-outcome="{o}" title="{escape(_MEANING[o])}">{LABEL[o]} '
                     f"{counts.get(o, 0)}</span>" for o in OUTCOMES)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}: "
             f"matrix</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}: the matrix</h1>",
             f'<p id="summary"><b>{escape(headline(cells))}</b> <span class="meta">'
             "(goldmig's outcomes, counted as the run's summary counts them)</span></p>",
             f'<p class="legend">{legend}</p>',
             f'<p class="meta" id="ring">{escape(ring_note(cells))}</p>',
             "<p class=\"meta\"><a href=\"index.html\">The Allure report</a> has each cell's steps, evidence "
             "and history. Hover a square for the reason; click it for the cell.</p>", changes_html(changes),
             accel_twins_html(cells)]
    for scenario in sorted({c.id.scenario for c in cells}):
        mine = [c for c in cells if c.id.scenario == scenario]
        builds = sorted({c.id.src for c in mine} | {c.id.dst for c in mine}, key=_natural)
        parts.append(f'<h2 id="{escape(scenario)}">{escape(scenario)}</h2>')
        for machine in sorted({c.id.machine for c in mine}, key=_natural):
            parts.append(_grid(scenario, machine, builds, {(c.id.src, c.id.dst): c for c in mine
                                                           if c.id.machine == machine}))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def headline(cells: list[CellResult]) -> str:
    """The run summary's first line for these cells (``goldmig: N cells: ...``), made by the
    summary's own code from the results' outcomes."""
    return summary_lines(list(summary_outcomes(cells)))[0]


RING = ("passed", "failed", "broken")
"""The Allure statuses in the overview ring's rate, passed / (passed + failed + broken): Allure 3's
``getSuccessRate`` (core-api, its ``includedInSuccessRate``); skipped and unknown results are
drawn in the ring but left out of its number."""


@dataclass(frozen=True)
class Ring:
    """What Allure's overview ring counts: each cell's latest result by its Allure status (Allure
    counts a cell's earlier runs as retries), with the goldmig outcomes under each status."""

    outcomes: dict[str, Counter[str]]
    """Allure status -> goldmig outcome -> cells."""

    @classmethod
    def of(cls, cells: list[CellResult]) -> Ring:
        outcomes: dict[str, Counter[str]] = {}
        for c in cells:
            outcomes.setdefault(c.latest.status, Counter())[c.outcome] += 1
        return cls(outcomes)

    def count(self, status: str) -> int:
        return sum(self.outcomes.get(status, Counter()).values())

    @property
    def percent(self) -> float:
        """The ring's number as Allure's overview shows it (web-commons ``getPieChartValues``:
        rounded down to a hundredth; 0 when nothing passed, failed or broke)."""
        total = sum(self.count(s) for s in RING)
        return math.floor(self.count("passed") / total * 10000) / 100 if total else 0.0

    def rate(self) -> str:
        """``64 / (64 + 1 + 0) = 98.46 %``."""
        passed, failed, broken = (self.count(s) for s in RING)
        return f"{passed} / ({passed} + {failed} + {broken}) = {self.percent:g} %"

    def statuses(self) -> str:
        """``64 passed (64 PASS); 1 failed (1 FIXED?); 236 skipped (214 KNOWN, 22 SKIP), not in its
        rate``."""
        parts = []
        for status in (*RING, "skipped", "unknown"):
            if self.count(status):
                mine = self.outcomes[status]
                inner = ", ".join(f"{mine[o]} {LABEL[o]}" for o in OUTCOMES if mine.get(o))
                parts.append(f"{self.count(status)} {status} ({inner})" + ("" if status in RING
                                                                           else ", not in its rate"))
        return "; ".join(parts)

    def note(self) -> str:
        return (f"Allure's overview ring is passed / (passed + failed + broken) = {self.rate()}, over each "
                f"cell's latest result by Allure status: {self.statuses() or 'no results'}. Allure counts "
                "a known failure (an xfail) as skipped and a FIXED? cell (a known failure that now passes, "
                "which fails the run) as failed; goldmig's own outcomes are the run summary's.")


def ring_note(cells: list[CellResult]) -> str:
    """What Allure's overview ring counts, in goldmig's outcomes (:meth:`Ring.note`)."""
    return Ring.of(cells).note()


def changes_html(changes: Changes | None) -> str:
    """What changed since the previous run, as a list of cells (used here and in the overview)."""
    if changes is None:
        return '<section id="changes"><h2>What changed</h2><p class="meta">These results carry no run id, ' \
               "so there is nothing to compare them with.</p></section>"
    items = "".join(f'<li data-change="{escape(c.kind)}" data-cell="{escape(c.cell)}"><b>{escape(c.kind)}'
                    f"</b> {escape(c.cell)}: was {escape(c.before)}, now {escape(c.now)}"
                    + (f" — {escape(c.reason[:200])}" if c.reason else "") + "</li>" for c in changes.changes)
    body = f'<ul class="changes">{items}</ul>' if items else ""
    return f'<section id="changes"><h2>What changed</h2><p>{escape(changes.headline())}</p>{body}</section>'


def accel_twins_html(cells: list[CellResult]) -> str:
    """Every ``kvm:`` cell beside its TCG twin (the same id without the prefix) when both ran:
    their outcomes, and which red checks (failed or not measured) each has that the other has
    not, so a finding reads as TCG's only, KVM's only, or both's."""
    by_id = {c.cell: c for c in cells}
    pairs = [(by_id[c.cell.removeprefix(KVM_PREFIX)], c) for c in cells
             if c.cell.startswith(KVM_PREFIX) and c.cell.removeprefix(KVM_PREFIX) in by_id]
    if not pairs:
        return ""
    rows = []
    for tcg, kvm in sorted(pairs, key=lambda pair: _natural(pair[0].cell)):
        red = {name: {c["id"] for c in cell.latest.checks} for name, cell in (("tcg", tcg), ("kvm", kvm))}
        both = ", ".join(sorted(red["tcg"] & red["kvm"])) or "none"
        rows.append(
            f'<tr data-cell="{escape(tcg.cell)}"><th scope="row">{escape(tcg.cell)}</th>'
            + "".join(f'<td class="o-{c.outcome}" title="{escape(c.reason)}"><a href="index.html#/'
                      f'{escape(c.latest.report_id)}">{LABEL[c.outcome]}</a></td>' for c in (tcg, kvm))
            + f"<td>{escape(', '.join(sorted(red['tcg'] - red['kvm'])) or 'none')}</td>"
            f"<td>{escape(', '.join(sorted(red['kvm'] - red['tcg'])) or 'none')}</td>"
            f"<td>{escape(both)}</td></tr>")
    return ('<h2 id="tcg-and-kvm">TCG and KVM, cell by cell</h2><p class="meta">Each <code>kvm:</code> '
            "cell (nested KVM hosts) beside its TCG twin in this run; red checks are those failed or not "
            'measured.</p><table class="grid twins"><tr><th class="corner">cell</th><th>TCG</th>'
            "<th>KVM</th><th>red under TCG only</th><th>red under KVM only</th><th>red under both</th></tr>"
            + "".join(rows) + "</table>")


def _grid(scenario: str, machine: str, builds: list[str], cells: dict[tuple[str, str], CellResult]) -> str:
    head = "".join(f'<th scope="col">{escape(b)}</th>' for b in builds)
    rows = []
    for src in builds:
        squares = []
        for dst in builds:
            cell = cells.get((src, dst))
            if cell is None:
                squares.append('<td class="o-none" title="not in this run">·</td>')
                continue
            hover = f"{cell.cell}: {LABEL[cell.outcome]}" + (f" — {cell.reason}" if cell.reason else "")
            squares.append(f'<td class="o-{cell.outcome}" data-cell="{escape(cell.cell)}" '
                           f'data-outcome="{cell.outcome}" title="{escape(hover)}"><a href="index.html#/'
                           f'{cell.latest.report_id}">{LABEL[cell.outcome]}</a></td>')
        rows.append(f'<tr><th scope="row">{escape(src)}</th>{"".join(squares)}</tr>')
    notes = "".join(f'<li><span class="o-{c.outcome}">{LABEL[c.outcome]}</span> {escape(c.id.src)} to '
                    f'{escape(c.id.dst)}: <a href="index.html#/{c.latest.report_id}">'
                    f"{escape(c.reason)}</a></li>"
                    for _, c in sorted(cells.items()) if c.outcome in _EXPLAINED)
    return (f'<h3>{escape(scenario)} on {escape(machine)}</h3><table class="grid" '
            f'data-scenario="{escape(scenario)}" data-machine="{escape(machine)}"><tr>'
            f'<th class="corner">source \\ destination</th>{head}</tr>' + "".join(rows) + "</table>"
            + (f'<ul class="notes">{notes}</ul>' if notes else ""))


def _natural(text: str) -> list[tuple[int, str]]:
    """qemu-5.2 < qemu-7.2 < qemu-10.0."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", text)]
