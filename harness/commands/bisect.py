"""``goldmig bisect``: the first commit of a QEMU repository at which a cell's check flips.

The cell names the bisected build ``candidate`` (``qemu-10.0>candidate/pseries-10.0/baseline-idle``).
The repository is cloned into the cache (the user's checkout is never touched) and ``git bisect
run`` drives :func:`step`: build the commit from source (incremental, ccache), run the one cell,
answer good (the check passed), bad (failed or not measured) or skip (no build, no cell). Which
check flips is found first, by running the cell at both ends, unless ``--check`` names it.
Each step's verdict is kept in ``reports/bisect/steps.jsonl``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.builds.compile import git
from harness.commands.patch import write_generated_matrix
from harness.errors import BuildError, ConfigError, GoldmigError
from harness.matrix.load import load_matrix
from harness.paths import cache_root, reports_root
from harness.runner.cell import CellImpossible, CellRecord, run_judged
from harness.sites.local import provisioned

CANDIDATE = "candidate"
FAILING = ("failed", "not measured")
GOOD, BAD, SKIP = 0, 1, 125
"""``git bisect run``'s answers."""


@dataclasses.dataclass(frozen=True)
class Bisection:
    matrix: str
    cell: str
    clone: str
    firmware: str | None
    check: str | None = None


def bisect(matrix: Path, cell: str, repo: Path, good: str, bad: str, firmware: Path | None,
           check: str | None) -> list[str]:
    """The first bad commit, its subject and the check, as lines to print."""
    if CANDIDATE not in cell.split("/", 1)[0].split(":")[-1].split(">"):
        raise ConfigError("the command line", "CELL", f"{cell!r} names no build {CANDIDATE!r}: write "
                          f"the bisected build as {CANDIDATE}, e.g. "
                          f"qemu-10.0>{CANDIDATE}/pseries-10.0/baseline-idle")
    clone = cache_root() / "bisect" / hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:12]
    if not (clone / ".git").is_dir():
        git(Path.cwd(), "clone", "--quiet", str(repo.resolve()), str(clone))
    git(clone, "fetch", "--quiet", str(repo.resolve()), "+refs/heads/*:refs/remotes/origin/*")
    job = Bisection(str(matrix.resolve()), cell, str(clone), str(firmware.resolve()) if firmware else None)
    good_sha, bad_sha = (git(repo, "rev-parse", ref) for ref in (good, bad))  # the user's refs
    if check is None:
        at_bad, at_good = _failing(job, bad_sha), _failing(job, good_sha)
        flipped = sorted(at_bad - at_good)
        if not flipped:
            raise GoldmigError(f"no check of {cell} fails at {bad} and passes at {good} "
                               f"(failing at {bad}: {sorted(at_bad) or 'none'})")
        check = flipped[0]
    job = dataclasses.replace(job, check=check)
    git(clone, "bisect", "reset", check_ok=False)
    git(clone, "bisect", "start", bad_sha, good_sha)
    try:
        run = subprocess.run(["git", "-C", str(clone), "bisect", "run", sys.executable, "-m",
                              "harness.commands.bisect", json.dumps(dataclasses.asdict(job))],
                             capture_output=True, text=True, check=False)
        first = next((line.split()[0] for line in run.stdout.splitlines()
                      if line.endswith("is the first bad commit")), None)
    finally:
        git(clone, "bisect", "reset", check_ok=False)
    if first is None:
        raise GoldmigError(f"git bisect run found no first bad commit: {run.stdout[-1500:]}")
    subject = git(clone, "log", "-1", "--format=%s", first)
    return [f"goldmig bisect: {first} is the first commit at which {check} fails on {cell}",
            f"  {subject}", f"  steps: {reports_root() / 'bisect' / 'steps.jsonl'}"]


def step(job: Bisection) -> int:
    """One commit: good, bad or skip, as ``git bisect run`` wants it; the verdict is kept."""
    commit = git(Path(job.clone), "rev-parse", "HEAD")
    try:
        failing = _failing(job, commit)
    except (BuildError, CellImpossible) as exc:
        _keep(commit, "skip", str(exc).splitlines()[0])
        return SKIP
    bad = job.check in failing
    _keep(commit, "bad" if bad else "good", f"{job.check} {'fails' if bad else 'passes'}")
    return BAD if bad else GOOD


def _failing(job: Bisection, commit: str) -> set[str]:
    """The checks of the cell that fail or are not measured with ``commit`` built."""
    clone = Path(job.clone)
    git(clone, "checkout", "--quiet", "--force", commit)
    provisioned.cache_clear()  # this process's builds are cached by spec; the tree has moved
    raw: dict[str, Any] = yaml.safe_load(Path(job.matrix).read_text())
    raw["builds"][CANDIDATE] = {"kind": "source", "tree": job.clone,
                                **({"firmware": job.firmware} if job.firmware else {})}
    matrix = load_matrix(write_generated_matrix(raw, reports_root() / "bisect" / "matrix.yaml", "bisect"))
    cell = next((c for c in matrix.cells() if c.id == job.cell), None)
    if cell is None:
        raise ConfigError(job.matrix, "groups", f"no group makes the cell {job.cell}; add one with "
                          f"{CANDIDATE} among its builds")
    record = CellRecord(cell, reports_root() / "bisect" / commit[:12])
    try:
        run_judged(cell, matrix, record)
    except (CellImpossible, BuildError):
        raise  # no verdict on the check: a skip
    except GoldmigError:
        pass  # a failed cell: its checks say what failed
    return {c.id for c in record.checks if c.verdict.value in FAILING}


def _keep(commit: str, answer: str, why: str) -> None:
    steps = reports_root() / "bisect" / "steps.jsonl"
    with steps.open("a") as out:
        out.write(json.dumps({"commit": commit, "answer": answer, "why": why}) + "\n")


def _main() -> int:
    """One step of ``git bisect run``; a harness error aborts the bisection (exit 255), it is
    no verdict on the commit."""
    try:
        return step(Bisection(**json.loads(sys.argv[1])))
    except GoldmigError as exc:
        print(f"goldmig bisect: {exc}", file=sys.stderr)
        return 255


if __name__ == "__main__":
    sys.exit(_main())
