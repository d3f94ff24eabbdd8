"""A full reports filesystem costs at most the large files: the small evidence is kept, each
cell keeps its real outcome with a note, the run goes on, and its summary, cells.json and
junit.xml are written whole. Real cells (host QEMU 7.2) into a 2 MB tmpfs.

A fault during the checks follows a completed 7.2 hop, whose DECR 7.2 does not keep: the
matrix declares matrix.yaml's entry for it, and the cells' real outcome is known, for that
alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.matrix.load import load_matrix
from harness.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_reports(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "reports"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "gm-tiny-reports", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_reports_filesystem_loses_only_the_streams(tmp_path: Path, tiny_reports: Path) -> None:
    (decr,) = [k for k in load_matrix(REPO_ROOT / "matrix.yaml").known_failures
               if k.checks == ("machine-state-cpu-*-decr*",)]
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump({
        "known_failures": [{"cells": list(decr.cells), "check": list(decr.checks), "match": decr.match,
                            "reason": decr.reason, "evidence": decr.evidence}],
        "builds": {"qemu-7.2": {"kind": "host"}},
        "hosts": "local",
        "reports": {"keep_streams": "all"},
        "groups": [{"name": "g", "builds": ["qemu-7.2"], "machines": ["pseries-7.2", "pseries-5.2"],
                    "scenarios": ["fault-kill-dst-check"]}],
        "selections": {"all": ["*"]},
        "default_selection": "all",
    }))
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--matrix", str(matrix)],
        env={**os.environ, "GOLDMIG_REPORTS": str(tiny_reports)}, capture_output=True, text=True,
        timeout=600, check=False)

    assert "INTERNALERROR" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-3000:]
    assert "goldmig: 2 cells: 0 passed, 0 failed, 0 flaky, 2 known" in done.stdout, done.stdout[-3000:]
    outcomes = json.loads((tiny_reports / "cells.json").read_text())
    assert [o["outcome"] for o in outcomes] == ["known", "known"]
    for o in outcomes:  # 7.2's DECR on both CPUs, explained; every other check passed
        against = {c["id"]: c.get("explained_by") for c in o["checks"]
                   if c["verdict"] in ("failed", "not measured")}
        assert against == dict.fromkeys(("machine-state-cpu-0-decr", "machine-state-cpu-1-decr"), decr.key)
    ElementTree.parse(tiny_reports / "junit.xml")
    for cell in ("qemu-7.2_qemu-7.2_pseries-7.2_fault-kill-dst-check",
                 "qemu-7.2_qemu-7.2_pseries-5.2_fault-kill-dst-check"):
        kept = {p.name for p in (tiny_reports / "runs" / cell).iterdir()}
        assert {"src-serial.log", "dst-qmp.log", "evidence-not-kept.txt"} <= kept
        assert "stream-src-dst.bin" not in kept
        note = (tiny_reports / "runs" / cell / "evidence-not-kept.txt").read_text()
        assert "stream-src-dst.bin" in note and "bytes free on the reports filesystem" in note
