"""The report in a real browser: two short real runs, ``goldmig report --serve``, and headless
Chromium rendering the overview, a failed cell's page and the matrix page.

What is checked comes from the rendered DOM (``--dump-dom``): the cells in Allure's tree with
their status, the failed cell's title, status and steps, the matrix squares by outcome and
their links to Allure's pages, and what changed since the first run. No page may log a script
error. Screenshots of the three pages are kept in ``reports/artifacts/report-browser/``.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.paths import REPO_ROOT, reports_root

CHROMIUM = shutil.which("chromium")
ARTIFACTS = reports_root() / "artifacts" / "report-browser"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (`make test-apt` installs Debian's chromium)")]

REFUSED = "qemu-10.0>qemu-7.2/pseries-7.2/baseline-idle"
MATRIX = textwrap.dedent("""
    builds:
      qemu-7.2: {kind: host}
      qemu-10.0: {kind: debian, suite: trixie}
    guest: {cpu: POWER9, memory_mb: 512, smp: 1, firmware: auto, devices: [virtio-rng-pci]}
    hosts: local
    groups:
      - {name: pairs, builds: [qemu-7.2, qemu-10.0], machines: [pseries-7.2, pseries-2.7],
         scenarios: [baseline-idle]}
    selections:
      refused: ["qemu-10.0>qemu-7.2/pseries-7.2/*"]
      small: ["*/pseries-7.2/*", "qemu-7.2>qemu-10.0/pseries-2.7/*"]
    default_selection: small
    known_failures:
      - cells: ["qemu-7.2>qemu-7.2/*"]
        check: timer-ticks-on-schedule
        match: "(?s)evidence: .*no tick"
        reason: QEMU 7.2 does not migrate the decrementer under TCG
        evidence: matrix.yaml
        intermittent: true  # as in matrix.yaml: the 1-CPU guest does not always miss its tick
""") + textwrap.indent(yaml.safe_dump(  # the machine state's: MSR[ME] on 10.0, DECR with 7.2
    [k for k in yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())["known_failures"]
     if str(k["check"]).startswith("machine-state-")], sort_keys=False, width=1000), "  ")
SLB = textwrap.indent(textwrap.dedent("""
    - cells: ["qemu-10.0>qemu-7.2/*"]
      check: migration-completes
      match: "cpu/slb: incoming version_id 2 is too new"
      reason: QEMU 10.0 to 7.2 is refused on load (cpu/slb version 2)
      evidence: matrix.yaml
"""), "  ")
EXPECTED = {  # what the second run finds (no pair of these builds is healthy: 10.0 flips MSR[ME])
    "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle": ("skipped", "KNOWN"),
    "qemu-10.0>qemu-10.0/pseries-7.2/baseline-idle": ("skipped", "KNOWN"),
    REFUSED: ("failed", "FAIL"),
    "qemu-7.2>qemu-7.2/pseries-7.2/baseline-idle": ("skipped", "KNOWN"),
    "qemu-7.2>qemu-10.0/pseries-2.7/baseline-idle": ("skipped", "SKIP"),
}
_CONSOLE_ERROR = re.compile(r":CONSOLE[^\]]*\] \"(Uncaught|Failed to load resource)[^\n]*")


def _goldmig(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A first run (the refused pair declared known), its report, a second run of five cells
    (the refused pair no longer declared), served by ``goldmig report --serve``."""
    tmp = tmp_path_factory.mktemp("browser")
    env = dict(os.environ, GOLDMIG_REPORTS=str(tmp / "reports"), PYTHONPATH=str(REPO_ROOT))
    (tmp / "first.yaml").write_text(MATRIX + SLB)
    (tmp / "second.yaml").write_text(MATRIX)
    first = _goldmig(env, "run", "--matrix", str(tmp / "first.yaml"), "--select", "refused")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = _goldmig(env, "report")
    assert report.returncode == 0, report.stderr
    second = _goldmig(env, "run", "--matrix", str(tmp / "second.yaml"))
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]  # the refused pair fails
    assert f"newly failing {REFUSED}" in second.stdout
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "report", "--serve", "--port", "0"],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:
            found = re.search(r"serving .* at (http://127\.0\.0\.1:\d+/)", line)
            if found:
                yield found.group(1), tmp
                break
        else:
            pytest.fail(f"goldmig report --serve exited with {server.wait()} before serving")
    finally:
        server.terminate()
        server.wait(timeout=10)


def _render(url: str, name: str, tmp: Path, height: int = 1600) -> str:
    """The page's DOM after its scripts ran; its screenshot goes to the artifacts."""
    assert CHROMIUM is not None
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'chromium'}",
              f"--window-size=1400,{height}", "--virtual-time-budget=15000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    errors = [m.group(0) for m in _CONSOLE_ERROR.finditer(dom.stderr)]
    assert not errors, f"{url}: script errors: {errors}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = subprocess.run([*common, f"--screenshot={ARTIFACTS / name}", url], capture_output=True, text=True,
                          timeout=120)
    assert (ARTIFACTS / name).stat().st_size > 10_000, shot.stderr[-2000:]
    return dom.stdout


def _tree(dom: str) -> dict[str, tuple[str, str]]:
    """Allure's tree leaves: cell id -> (status, Allure test result id)."""
    leaves = re.findall(r'data-testid="tree-leaf"[^>]*\sid="([0-9a-f]+)".*?'
                        r'data-testid="tree-leaf-status-(\w+)".*?'
                        r'data-testid="tree-leaf-title"[^>]*>([^<]+)<', dom, re.S)
    return {html.unescape(title): (status, leaf) for leaf, status, title in leaves}


def test_overview_failed_cell_and_matrix_render_with_the_run_s_outcomes(served: tuple[str, Path]) -> None:
    base, tmp = served
    matrix = _render(base + "matrix.html", "matrix.png", tmp, height=1000)
    squares = {html.unescape(cell): (outcome, label, target) for cell, outcome, target, label in re.findall(
        r'<td class="o-\w+" data-cell="([^"]+)" data-outcome="(\w+)" title="[^"]*"><a href="index\.html#/'
        r'([0-9a-f]+)">([A-Z?]+)</a>', matrix)}
    assert {cell: label for cell, (_, label, _) in squares.items()} == {c: v[1] for c, v in EXPECTED.items()}
    assert re.search(r'<li data-change="newly failing" data-cell="' + re.escape(html.escape(REFUSED)), matrix)

    overview = _render(base + "index.html", "overview.png", tmp)
    assert 'id="goldmig-matrix-link" href="matrix.html"' in overview
    shown_text = html.unescape(overview)
    head = "goldmig: 5 cells: 0 passed, 1 failed, 0 flaky, 3 known, 0 fixed, 0 broken, 1 skipped"
    assert f'<b id="goldmig-summary">{head}</b>' in shown_text  # the run's summary, on top
    assert ("Allure's overview ring is passed / (passed + failed + broken) = 0 / (0 + 1 + 0) = 0 %, "
            "over each cell's latest result by Allure status: 1 failed (1 FAIL); 4 skipped (3 KNOWN, "
            "1 SKIP), not in its rate.") in shown_text
    variables = dict(re.findall(r'data-testid="metadata-item-key"[^>]*>([^<]+)</span>.*?'
                                r'data-testid="metadata-item-value".*?>([^<>]+)</span>', shown_text, re.S))
    assert {k: v for k, v in variables.items() if k.startswith("goldmig ")} == {  # Allure's Variables block
        "goldmig passed": "0", "goldmig failed": "1", "goldmig flaky": "0", "goldmig known": "3",
        "goldmig fixed": "0", "goldmig broken": "0", "goldmig skipped": "1"}
    assert variables["Allure's ring"] == "passed / (passed + failed + broken)"
    assert "what changed since" in overview and "1 newly failing" in overview
    tree = _tree(overview)
    shown = {c: v for c, v in EXPECTED.items() if "pseries-7.2" in c}  # the pseries-2.7 group starts folded
    assert {cell: status for cell, (status, _) in tree.items()} == {c: v[0] for c, v in shown.items()}
    for cell, (_, leaf) in tree.items():
        assert squares[cell][2] == leaf, f"the matrix links {cell} to another Allure page"

    failed = _render(f"{base}index.html#/{squares[REFUSED][2]}", "failed-cell.png", tmp, height=2200)
    title = re.search(r'data-testid="test-result-info-title"[^>]*>([^<]+)<', failed)
    assert title is not None and html.unescape(title.group(1)) == REFUSED
    assert 'data-testid="test-result-status-failed"' in failed
    steps = [(html.unescape(t), s) for s, t in re.findall(
        r'data-testid="test-result-step-header".*?data-testid="tree-leaf-status-(\w+)".*?'
        r'data-testid="test-result-step-title"[^>]*>([^<]+)<', failed, re.S)]
    body = [(t, s) for t, s in steps
            if t.startswith(("provision", "start QEMU")) or re.match(r"migration \d", t)]
    assert body == [("provision builds and the golden guest", "passed"),
                    ("start QEMU and boot the guest", "passed"),
                    ("migration 1: source to destination", "failed")]
    assert ("migration completes (failed, unexplained)", "failed") in steps  # the refusal as a check
    assert "cpu/slb: incoming version_id 2 is too new for local version_id 1" in html.unescape(failed)
    assert "Failed check: migration-completes" in failed  # its category
