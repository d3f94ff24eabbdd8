"""A per-patch job's report opens on the base/candidate table: the checks the candidate breaks,
fixes or made flaky, read from the ``patch.json`` that ``goldmig patch`` writes into its results
directory (:mod:`harness.commands.patch_compare` says what each change means).

:func:`render` writes ``patch.html`` beside matrix.html (plain HTML and CSS, no script);
:func:`bar_html` is the same table, shortened, for the goldmig bar on top of index.html.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from harness.commands.patch_compare import ALONE, CHANGES, DIFFERS, CheckChange, summary, twin
from harness.report.matrix_page import STYLE as MATRIX_STYLE
from harness.report.results import ReportError

PATCH_FILE = "patch.json"
"""In a results directory: the per-patch job's comparison (``{"summary": ..., "checks": [...]}``)."""
PATCH_PAGE = "patch.html"
_NO_CHANGE = "No check breaks, fixes or is flaky."
BAR_ROWS = 20
"""Rows of the table in index.html's goldmig bar; the rest are on patch.html."""
_FIELDS = {"cell": str, "check": str, "change": str, "base": list, "candidate": list, "measured": str}
_COLOURS = {"breaks": "#dc2626", "fixes": "#0d9488", "flaky": "#7c3aed"}
"""Each change's colour (a break red, as a failed cell in the matrix view), on the page and in the bar."""


def _colours(scope: str = "") -> str:
    return " ".join(f"{scope}.c-{change} {{ background: {colour}; color: #fff; }}"
                    for change, colour in _COLOURS.items())


_STYLE = MATRIX_STYLE + """
table.patch { border-collapse: collapse; margin: 0 0 8px; }
.patch th, .patch td { border: 1px solid #d1d5db; padding: 3px 8px; text-align: left; vertical-align: top; }
.patch th { background: #f3f4f6; font-weight: 600; } .patch td.measured { font-family: monospace; }
""" + _colours() + "\n"
_BAR_STYLE = ("#goldmig-patch table { border-collapse: collapse; margin: 4px 0; font-size: 12px; } "
              "#goldmig-patch th, #goldmig-patch td { border: 1px solid #d1d5db; padding: 2px 6px; "
              "text-align: left; vertical-align: top; } #goldmig-patch th { background: #f3f4f6; } "
              + _colours("#goldmig-patch "))


@dataclass(frozen=True)
class Patch:
    """The comparison of a candidate build with its base, as ``goldmig patch`` wrote it."""

    summary: str
    checks: tuple[CheckChange, ...]

    def shown(self) -> list[CheckChange]:
        """The breaks, fixes and flaky checks: breaks first, then by cell and check."""
        return sorted((c for c in self.checks if c.change in DIFFERS),
                      key=lambda c: (DIFFERS.index(c.change), c.cell, c.check))


def read_patch(results: list[Path]) -> Patch | None:
    """The ``patch.json`` of the results directories (None when none has one; several merge)."""
    found = [read_patch_file(d / PATCH_FILE) for d in results if (d / PATCH_FILE).exists()]
    if len(found) <= 1:
        return found[0] if found else None
    checks = {(c.cell, c.check): c for p in found for c in p.checks}  # one directory twice: once
    merged = tuple(checks[k] for k in sorted(checks))
    return Patch(summary(list(merged), {})[0], merged)


def read_patch_file(path: Path) -> Patch:
    """One ``patch.json``; a malformed one raises :class:`ReportError` naming it."""
    try:
        data = json.loads(path.read_text())
        return Patch(_text(data, "summary"), tuple(_check(c) for c in data["checks"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{path}: not a goldmig patch comparison ({type(exc).__name__}: {exc}); run "
                          "`goldmig patch` again or delete it to report these results without the "
                          "base/candidate table") from exc


def _text(data: Any, key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} is {type(value).__name__}, not text")
    return value


def _check(item: Any) -> CheckChange:
    for key, kind in _FIELDS.items():
        if not isinstance(item[key], kind):
            raise TypeError(f"{key!r} of a check is {type(item[key]).__name__}, not {kind.__name__}")
    if item["change"] not in (*CHANGES, ALONE):
        raise ValueError(f"change {item['change']!r} of {item['cell']}: {item['check']} is none of "
                         f"{', '.join((*CHANGES, ALONE))}")
    return CheckChange(item["cell"], item["check"], item["change"], tuple(map(str, item["base"])),
                       tuple(map(str, item["candidate"])), item["measured"])


def render(patch: Patch, title: str) -> str:
    """The whole page: the summary, the breaks/fixes/flaky table, the same per cell pair, the
    cells judged alone."""
    shown = patch.shown()
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}: '
             f"patch</title><style>{_STYLE}</style></head><body>",
             f'<h1 id="summary">{escape(patch.summary)}</h1>',
             '<p class="meta">Each candidate cell against its base twin, check by check. '
             '<a href="index.html">The Allure report</a> has each cell\'s steps and evidence; '
             '<a href="matrix.html">the matrix view</a> every cell.</p>',
             "<h2>What the candidate changed</h2>",
             table(shown) if shown else f'<p class="meta" id="no-change">{_NO_CHANGE}</p>',
             _same(patch.checks), _alone(patch.checks), "</body></html>\n"]
    return "\n".join(parts)


def table(checks: list[CheckChange]) -> str:
    """The breaks/fixes/flaky rows, one per check."""
    head = "".join(f"<th>{h}</th>" for h in ("change", "candidate cell", "base twin cell", "check",
                                               "base verdicts", "candidate verdicts",
                                               "what the candidate measured"))
    rows = "".join(f'<tr data-change="{escape(c.change)}" data-cell="{escape(c.cell)}" '
                   f'data-check="{escape(c.check)}"><td class="c-{escape(c.change)}">{escape(c.change)}</td>'
                   f"<td>{escape(c.cell)}</td><td>{escape(twin(c.cell) or '')}</td><td>{escape(c.check)}</td>"
                   f"<td>{_verdicts(c.base)}</td><td>{_verdicts(c.candidate)}</td>"
                   f'<td class="measured">{escape(c.measured)}</td></tr>' for c in checks)
    return f'<table class="patch" id="changed"><tr>{head}</tr>{rows}</table>'


def _verdicts(verdicts: tuple[str, ...]) -> str:
    """One verdict per run (``no such check`` where the build never made it)."""
    return escape(", ".join(verdicts)) if verdicts else '<span class="meta">no such check</span>'


def _same(checks: tuple[CheckChange, ...]) -> str:
    """Per cell pair, how many checks failed or passed with both builds."""
    counts: dict[str, Counter[str]] = {}
    for c in checks:
        if c.change != ALONE:
            counts.setdefault(c.cell, Counter())[c.change] += 1
    rows = "".join(f'<tr data-cell="{escape(cell)}"><td>{escape(cell)}</td><td>{escape(twin(cell) or "")}'
                   f'</td><td>{n["same failure"]}</td><td>{n["same pass"]}</td></tr>'
                   for cell, n in sorted(counts.items()))
    return ('<h2>The same with both builds</h2><table class="patch" id="same"><tr><th>candidate cell</th>'
            f"<th>base twin cell</th><th>same failure</th><th>same pass</th></tr>{rows}</table>"
            if rows else "")


def _alone(checks: tuple[CheckChange, ...]) -> str:
    """The candidate cells whose base twin could not run: their checks that failed."""
    cells: dict[str, list[CheckChange]] = {}
    for c in checks:
        if c.change == ALONE:
            cells.setdefault(c.cell, []).append(c)
    rows = "".join(f'<tr data-cell="{escape(cell)}"><td>{escape(cell)}</td><td>{len(mine)}</td><td>'
                   + escape(", ".join(c.check for c in mine if _fails(c)) or "none") + "</td></tr>"
                   for cell, mine in sorted(cells.items()))
    return ('<h2>Judged alone</h2><p class="meta">Their base twin could not run: these candidate cells are '
            'judged by the known failures, as any cell.</p><table class="patch" id="alone"><tr><th>candidate '
            f"cell</th><th>checks</th><th>failed or not measured</th></tr>{rows}</table>" if rows else "")


def _fails(check: CheckChange) -> bool:
    return any(v in ("failed", "not measured") for v in check.candidate)


def bar_html(patch: Patch, rows: int = BAR_ROWS) -> str:
    """For the goldmig bar on top of index.html, open: the summary in bold and the first ``rows``
    breaks, fixes and flaky checks, with a link to patch.html for the rest."""
    shown = patch.shown()
    more = len(shown) - rows
    rest = (f'<p><a href="{PATCH_PAGE}">{more} more on {PATCH_PAGE}</a></p>' if more > 0
            else f'<p><a href="{PATCH_PAGE}">the whole comparison on {PATCH_PAGE}</a></p>')
    return ('<details open id="goldmig-patch"><summary style="cursor:pointer">'
            f'<b id="goldmig-patch-summary" style="font-weight:700">{escape(patch.summary)}</b></summary>'
            f"<style>{_BAR_STYLE}</style>"
            '<div style="background:#fff;color:#1f2937;padding:4px 12px">'
            + (table(shown[:rows]) if shown else f"<p>{_NO_CHANGE}</p>")
            + f"{rest}</div></details>")
