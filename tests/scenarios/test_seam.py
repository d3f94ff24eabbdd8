"""The scenario seam: a new scenario is one module plus a matrix entry; names are validated
without loading the runtime; variants that a build cannot express are skipped with the reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT

HERE = Path(__file__).parent

MATRIX = textwrap.dedent("""
    builds:
      qemu-7.2: {kind: host}
      qemu-10.0: {kind: debian, suite: trixie}
    hosts: local
    guest: {smp: 1}   # with 2 CPUs every Debian pair hits a known timer bug (matrix.yaml)
    groups:
      - {name: example, builds: [qemu-7.2, qemu-10.0], machines: [pseries-7.2, pseries-3.1],
         scenarios: [example]}
    selections: {forward: ["qemu-7.2>qemu-10.0/*"]}
    default_selection: forward
""")


def _python(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``path`` (holding harness/scenarios/) on the path."""
    env = {"PYTHONPATH": f"{REPO_ROOT}:{path}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=path, check=False, timeout=120)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """The example scenario as harness/scenarios/example.py outside the repository."""
    package = tmp_path / "lab" / "harness" / "scenarios"
    package.mkdir(parents=True)
    shutil.copyfile(HERE / "example_scenario.py", package / "example.py")
    (tmp_path / "lab" / "matrix.yaml").write_text(MATRIX)
    return tmp_path / "lab"


def test_matrix_names_are_validated_without_loading_the_runtime(outside: Path) -> None:
    done = _python(textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from harness.matrix.load import load_matrix
        cells = [c.id for c in load_matrix(Path("matrix.yaml")).select("forward")]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("qemu", "paramiko")
                       or m.startswith(("harness.qemu.process", "harness.qemu.monitor", "harness.hosts",
                                        "harness.runner.context", "harness.migration")))
        print(json.dumps({"cells": cells, "heavy": heavy}))
    """), outside)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert result["cells"] == [
        "qemu-7.2>qemu-10.0/pseries-7.2/example-xics", "qemu-7.2>qemu-10.0/pseries-7.2/example-xive",
        "qemu-7.2>qemu-10.0/pseries-3.1/example-xics", "qemu-7.2>qemu-10.0/pseries-3.1/example-xive",
    ]


def test_an_unknown_variant_is_named_with_a_suggestion(outside: Path) -> None:
    (outside / "matrix.yaml").write_text(MATRIX.replace("scenarios: [example]", "scenarios: [example-xiv]"))
    done = _python("from pathlib import Path; from harness.matrix.load import load_matrix; "
                   "load_matrix(Path('matrix.yaml'))", outside)
    assert "groups[0].scenarios[0]: 'example-xiv' is not a scenario or scenario-variant; " \
           "did you mean 'example-xive'?" in done.stderr


@pytest.mark.slow
def test_variants_start_the_machine_they_declare_and_skip_where_impossible(outside: Path) -> None:
    """Real cells: each variant's ic-mode is on the command line and in the guest; pseries-3.1 is
    XICS only, so its xive variant is skipped with that reason and its xics one runs. A 7.2 to
    10.0 hop flips MSR[ME] and loses DECR: the cells are judged with matrix.yaml's two entries
    for the machine state, which must explain exactly those checks; every other check passes."""
    done = _python(textwrap.dedent("""
        import dataclasses, json
        from pathlib import Path
        from harness.runner.cell import CellImpossible, CellRecord, run_judged
        from harness.matrix.load import load_matrix
        from harness.paths import REPO_ROOT
        shipped = load_matrix(REPO_ROOT / "matrix.yaml").known_failures
        state = tuple(k for k in shipped if all(c.startswith("machine-state-") for c in k.checks))
        matrix = dataclasses.replace(load_matrix(Path("matrix.yaml")), known_failures=state)
        out = {}
        for cell in matrix.select("forward"):
            record = CellRecord(cell, Path("evidence") / cell.id.replace("/", "_"))
            try:
                verdict = run_judged(cell, matrix, record)
                argv = (record.evidence / "src-argv.txt").read_text()
                rest = [c for c in record.checks if not c.id.startswith("machine-state-")]
                out[cell.id] = {"ok": [c.invariant for c in record.checks if c.ok],
                                "failed": [c.invariant for c in rest if c.counts_against],
                                "idle": [c.invariant for c in rest if c.verdict.value == "not applicable"],
                                "verdict": verdict.outcome,
                                "explained": sorted(v.check.id for v in verdict.checks
                                                    if v.explained_by is not None),
                                "machine": record.parameters["machine"], "argv": argv}
            except CellImpossible as exc:
                out[cell.id] = {"skipped": str(exc)}
        print(json.dumps(out))
    """), outside)
    assert done.returncode == 0, done.stderr[-3000:]
    cells = json.loads(done.stdout.splitlines()[-1])
    xics = cells["qemu-7.2>qemu-10.0/pseries-7.2/example-xics"]
    xive = cells["qemu-7.2>qemu-10.0/pseries-7.2/example-xive"]
    assert "ic-mode=xics" in xics["machine"] and "ic-mode=xive" in xive["machine"]
    assert "ic-mode=xics" in xics["argv"] and "ic-mode=xive" in xive["argv"]
    assert xics["failed"] == [] and xive["failed"] == []
    for judged in (xics, xive):
        assert judged["verdict"] == "known"
        assert judged["explained"] == ["machine-state-cpu-0-decr", "machine-state-cpu-0-msr"]
    assert xics["idle"] == [] and xive["idle"] == []
    assert "guest uses the variant's interrupt controller" in xics["ok"]
    assert "IPIs delivered between every pair of CPUs" not in xics["ok"], "left out by name"
    skipped = cells["qemu-7.2>qemu-10.0/pseries-3.1/example-xive"]["skipped"]
    assert skipped == "pseries-3.1 is older than pseries-4.0, which this variant needs"
    assert cells["qemu-7.2>qemu-10.0/pseries-3.1/example-xics"]["failed"] == []
    assert cells["qemu-7.2>qemu-10.0/pseries-3.1/example-xics"]["verdict"] == "known"
