"""A per-patch job's report: patch.html and the base/candidate table on top of index.html."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_build import _results  # tests/report/test_build.py: its results-directory maker

from harness.commands.patch_compare import CheckChange
from harness.report.build import build_report
from harness.report.patch_page import PATCH_FILE, PATCH_PAGE, Patch, bar_html, read_patch, render
from harness.report.results import ReportError

CELL = "qemu-7.2>candidate/pseries-10.0/baseline-idle"
OTHER = "candidate>qemu-7.2/pseries-10.0/baseline-idle"
ALONE = "qemu-5.2>candidate/pseries-2.7/baseline-idle"
SUMMARY = ("goldmig patch: breaks 1, fixes 1 (flaky 1, same failure 1, same pass 2; checks of 2 cell pairs, "
           "candidate against base)")


def _check(cell: str, check: str, change: str, base: list[str], candidate: list[str],
           measured: str = "") -> dict[str, Any]:
    return {"cell": cell, "check": check, "change": change, "base": base, "candidate": candidate,
            "measured": measured}


CHECKS = [_check(CELL, "machine-state-cpu-0-ctr", "breaks", ["passed"], ["failed"], "ctr 0x10 <> 0x0"),
          _check(CELL, "guest-clock", "same pass", ["passed"], ["passed"]),
          _check(CELL, "online-cpus", "same failure", ["failed"], ["failed"], "0-1 then 0"),
          _check(OTHER, "dirty-pages", "fixes", ["failed"], ["passed"], "all pages"),
          _check(OTHER, "guest-net", "flaky", ["passed", "passed"], ["passed", "failed"], "lost 3"),
          _check(OTHER, "guest-clock", "same pass", ["passed"], ["passed"]),
          _check(ALONE, "guest-clock", "alone", [], ["failed"], "skew 5 s")]


def _patch_results(tmp_path: Path, checks: list[dict[str, Any]] = CHECKS) -> Path:
    results = _results(tmp_path / "results", "p1", "2026-12-10T01:00:00+00:00",
                       {c: "passed" for c in (CELL, OTHER, ALONE,
                                              CELL.replace("candidate", "base"),
                                              OTHER.replace("candidate", "base"))})
    (results / PATCH_FILE).write_text(json.dumps({"summary": SUMMARY, "checks": checks}))
    return results


def _rows(page: str, table: str) -> list[tuple[str, str, str]]:
    body = re.search(rf'<table class="patch" id="{table}">(.*?)</table>', page, re.S)
    assert body is not None, table
    return re.findall(r'<tr data-change="([^"]+)" data-cell="([^"]+)" data-check="([^"]+)"', body.group(1))


def test_a_per_patch_job_s_report_opens_on_the_base_candidate_table(tmp_path: Path) -> None:
    built = build_report([_patch_results(tmp_path)], tmp_path / "html", tmp_path / "history")
    assert built.patch == tmp_path / "html" / PATCH_PAGE
    page = built.patch.read_text()
    assert f'<h1 id="summary">{html.escape(SUMMARY)}</h1>' in page
    cell, other = html.escape(CELL), html.escape(OTHER)
    assert _rows(page, "changed") == [("breaks", cell, "machine-state-cpu-0-ctr"),
                                      ("fixes", other, "dirty-pages"), ("flaky", other, "guest-net")]
    assert html.escape("qemu-7.2>base/pseries-10.0/baseline-idle") in page  # the break's twin
    assert f'<tr data-cell="{cell}"><td>{cell}</td><td>' in page
    assert re.search(rf'<tr data-cell="{re.escape(cell)}">.*?<td>1</td><td>1</td></tr>', page)
    assert re.search(rf'<tr data-cell="{re.escape(other)}">.*?<td>0</td><td>1</td></tr>', page)
    assert re.search(rf'id="alone">.*<tr data-cell="{re.escape(html.escape(ALONE))}"><td>[^<]+</td><td>1</td>'
                     r"<td>guest-clock</td>", page)
    index = built.index.read_text()
    body = index[index.index("<body>"):]
    top = body[:body.index('id="goldmig-ring"')]  # the bar's first lines, before Allure's content
    assert '<details open id="goldmig-patch">' in top
    assert f'<b id="goldmig-patch-summary" style="font-weight:700">{html.escape(SUMMARY)}</b>' in top
    assert top.index("<details open") < top.index('data-check="machine-state-cpu-0-ctr"')
    assert 'id="goldmig-patch-link" href="patch.html"' in top
    assert built.lines()[-1].startswith("  the candidate against its base: ")
    assert json.loads((tmp_path / "html" / "summary.json").read_text())["stats"]["total"] == 5  # cells only


def test_without_patch_json_there_is_no_patch_page(tmp_path: Path) -> None:
    results = _results(tmp_path / "results", "r", "2026-12-10T01:00:00+00:00", {CELL: "passed"})
    built = build_report([results], tmp_path / "html", tmp_path / "history")
    assert built.patch is None and not (tmp_path / "html" / PATCH_PAGE).exists()
    assert "goldmig-patch" not in built.index.read_text()
    assert len(built.lines()) == 3


UNKNOWN_CHANGE = json.dumps({"summary": "s", "checks": [_check(CELL, "c", "worse", [], [])]})


@pytest.mark.parametrize("text", ["{not json", '{"checks": []}', '{"summary": "s", "checks": [{"cell": 1}]}',
                                  UNKNOWN_CHANGE])
def test_a_malformed_patch_json_names_the_file(tmp_path: Path, text: str) -> None:
    results = _patch_results(tmp_path)
    (results / PATCH_FILE).write_text(text)
    with pytest.raises(ReportError, match=rf"{re.escape(str(results / PATCH_FILE))}: not a goldmig patch "
                                          r"comparison .*run `goldmig patch` again or delete it"):
        build_report([results], tmp_path / "html", tmp_path / "history")
    assert not (tmp_path / "html").exists()  # refused before Allure ran


def test_several_results_directories_merge_their_checks(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for directory, checks in ((one, CHECKS[:3]), (two, CHECKS[3:])):
        directory.mkdir()
        (directory / PATCH_FILE).write_text(json.dumps({"summary": "part", "checks": checks}))
    assert read_patch([tmp_path]) is None
    merged = read_patch([one, two, two])
    assert merged is not None
    assert len(merged.checks) == len(CHECKS)
    assert merged.summary == SUMMARY  # counted again over the merged checks
    solo = read_patch([one])
    assert solo is not None and solo.summary == "part"  # one file: its own line


def _patch(*checks: dict[str, Any]) -> Patch:
    return Patch(SUMMARY, tuple(CheckChange(c["cell"], c["check"], c["change"], tuple(c["base"]),
                                            tuple(c["candidate"]), c["measured"]) for c in checks))


def test_render_escapes_every_text() -> None:
    page = render(_patch(_check("a<b>candidate/m/s", "x<y", "breaks", ["passed"], ["failed"],
                                "<script>alert(1)</script> & more")), "goldmig <nightly>")
    assert "<script>alert" not in page and "<b>candidate" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert 'data-check="x&lt;y"' in page and "<title>goldmig &lt;nightly&gt;: patch</title>" in page
    assert "a&lt;b&gt;base/m/s" in page  # the twin


def test_render_without_changes_says_so_and_lists_breaks_first() -> None:
    assert 'id="no-change"' in render(_patch(_check(CELL, "c", "same pass", ["passed"], ["passed"])), "t")
    page = render(_patch(_check(CELL, "a", "flaky", ["passed"], ["passed", "failed"]),
                         _check(CELL, "b", "fixes", ["failed"], ["passed"]),
                         _check(OTHER, "c", "breaks", ["passed"], [])), "t")
    assert [r[0] for r in _rows(page, "changed")] == ["breaks", "fixes", "flaky"]
    assert '<span class="meta">no such check</span>' in page


def test_the_bar_shows_the_first_rows_and_links_the_rest() -> None:
    patch = _patch(*(_check(CELL, f"check-{n:02}", "breaks", ["passed"], ["failed"]) for n in range(25)))
    bar = bar_html(patch)
    assert bar.startswith('<details open id="goldmig-patch">')
    assert len(_rows(bar, "changed")) == 20
    assert '<a href="patch.html">5 more on patch.html</a>' in bar
    assert "the whole comparison on patch.html" in bar_html(patch, rows=30)
