"""The CI examples in docs/ci stay true to goldmig: every goldmig command they run parses with
goldmig's own parser (``harness.cli.build_parser``), every ``make`` target is one of the Makefile's,
the nightly shards over the CI's index and total and merges every shard into one report, and the
per-patch job runs ``goldmig patch``. No QEMU runs: the pipelines are read, not executed."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import build_parser
from harness.paths import REPO_ROOT

CI_DIR = REPO_ROOT / "docs" / "ci"
MAKEFILE = REPO_ROOT / "Makefile"
GOLDMIG_DIR = "goldmig"
"""Where the examples check goldmig out inside the QEMU tree: its targets run as ``make -C goldmig``."""

SAMPLES: Mapping[str, str] = {
    "CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4", "CI_PROJECT_DIR": "/builds/qemu/qemu",
    "matrix.shard": "2", "strategy.job-total": "4", "GITHUB_WORKSPACE": "/__w/qemu/qemu",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "master", "GITHUB_BASE_REF": "master",
}
"""A sample value for each CI variable a goldmig or make command may use."""

SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")"})
REDIRECTS = frozenset({">", ">>", "<", ">&", "<&", "&>"})
MAKE_OPTIONS_WITH_VALUE = frozenset({"-f", "-I", "-o", "-W", "--file", "--makefile", "--include-dir"})
GITLAB_KEYWORDS = frozenset({"default", "include", "stages", "variables", "workflow", "image",
                             "services", "cache", "before_script", "after_script"})


class CommandError(AssertionError):
    """A command of a CI example that goldmig or its Makefile would refuse."""


@dataclass(frozen=True)
class Command:
    """One simple shell command of a job: the logical line it came from and its argv, with the
    CI variables given their sample values."""

    job: str
    line: str
    argv: tuple[str, ...]

    def where(self) -> str:
        return f"{self.job}: `{self.line}`"


@dataclass(frozen=True)
class Job:
    """One CI job: the pipeline events that start it, its shell lines, its definition."""

    name: str
    events: frozenset[str]
    lines: tuple[str, ...]
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class Pipeline:
    """One CI example: its jobs, how it spells a shard's index and the shard count, the event of a
    proposed change and the triggers the file declares."""

    kind: str
    path: Path
    jobs: tuple[Job, ...]
    shard_vars: tuple[str, str]
    change_event: str
    declared_events: frozenset[str]


# --- shell lines and commands ------------------------------------------------------------------

def shell_lines(script: object) -> list[str]:
    """The logical lines of a ``script:`` or ``run:`` value (a string or nested lists of them):
    backslash continuations joined, blank lines and comments dropped."""
    if isinstance(script, list):
        return [line for item in script for line in shell_lines(item)]
    if not isinstance(script, str):
        return []
    lines: list[str] = []
    pending = ""
    for raw in script.splitlines():
        text = pending + raw.strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip() + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            lines.append(text)
    if pending.strip():
        lines.append(pending.strip())
    return lines


def substitute(line: str) -> str:
    """``line`` with the CI variables of SAMPLES given their values (``$X``, ``${X}``, ``${{ x }}``)."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return SAMPLES.get(name, match.group(0))

    return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}|\$\{(\w+)\}|\$(\w+)", value, line)


def split_commands(line: str) -> list[tuple[str, ...]]:
    """The simple commands of a shell line (split at ``&&``, ``||``, ``;``, ``|``), without their
    leading ``NAME=value`` assignments and redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[tuple[str, ...]] = []
    current: list[str] = []
    tokens = iter(lexer)
    for token in tokens:
        if token in SEPARATORS:
            commands.append(tuple(current))
            current = []
        elif token in REDIRECTS:
            next(tokens, None)
        elif current or not re.fullmatch(r"\w+=.*", token):
            current.append(token)
    commands.append(tuple(current))
    return [argv for argv in commands if argv]


def job_commands(job: Job) -> list[Command]:
    """Every simple command of ``job``, its CI variables substituted."""
    return [Command(job.name, line, argv)
            for line in job.lines for argv in split_commands(substitute(line))]


def goldmig_args(command: Command) -> list[str] | None:
    """The arguments of a goldmig invocation (``goldmig ...``, ``.venv/bin/goldmig ...``), or None."""
    return list(command.argv[1:]) if Path(command.argv[0]).name == "goldmig" else None


# --- the checkers ------------------------------------------------------------------------------

def check_goldmig(command: Command) -> argparse.Namespace:
    """Parse a goldmig invocation with goldmig's own parser (what follows ``--`` goes to pytest).
    Raises CommandError with argparse's message and the offending line."""
    args = goldmig_args(command)
    if args is None:
        raise CommandError(f"{command.where()}: not a goldmig command")
    ours = args[:args.index("--")] if "--" in args else args
    unset = [a for a in ours if "$" in a]
    if unset:
        raise CommandError(f"{command.where()}: no sample value for {unset} (add one to SAMPLES)")
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            return build_parser().parse_args(ours)
    except SystemExit as exc:
        last = (said.getvalue().strip().splitlines() or ["(nothing said)"])[-1]
        raise CommandError(f"{command.where()}: goldmig refuses it (exit {exc.code}): {last}") from None


def makefile_targets(makefile: Path = MAKEFILE) -> frozenset[str]:
    """The explicit rule targets of goldmig's Makefile (not its variables or file targets)."""
    rule = re.compile(r"^([A-Za-z0-9_.-][^:=#\s]*(?:[ \t]+[^:=#\s$]+)*)[ \t]*::?(?!=)", re.M)
    return frozenset(t for m in rule.finditer(makefile.read_text()) for t in m.group(1).split())


def make_call(argv: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """The ``-C`` directory and the targets of a make invocation."""
    directory: str | None = None
    targets: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-C", "--directory"):
            directory = next(args, None)
        elif arg.startswith(("-C", "--directory=")):
            directory = arg.removeprefix("--directory=").removeprefix("-C")
        elif arg in MAKE_OPTIONS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-") and "=" not in arg and not arg.isdigit():
            targets.append(arg)
    return directory, targets


def check_make(command: Command, known: frozenset[str]) -> list[str]:
    """Check a make invocation: targets only in goldmig's checkout (``make -C goldmig``), each
    a rule of its Makefile. A make without targets (the QEMU build's) is not goldmig's.
    Returns the targets; raises CommandError."""
    directory, targets = make_call(command.argv)
    if not targets:
        return []
    if directory is None or directory.rstrip("/") != GOLDMIG_DIR:
        raise CommandError(f"{command.where()}: goldmig's targets run as `make -C {GOLDMIG_DIR} TARGET` "
                           f"(this one runs in {directory or 'the QEMU tree'})")
    missing = [t for t in targets if t not in known]
    if missing:
        raise CommandError(f"{command.where()}: no such target in the Makefile: {missing} "
                           f"(it has {sorted(known - {'.PHONY'})})")
    return targets


# --- the two pipelines -------------------------------------------------------------------------

def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """GitLab's ``extends``: mappings merge deeply, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def _gitlab_resolved(doc: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A GitLab job with its ``extends`` templates applied."""
    parents = spec.get("extends", [])
    resolved: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        resolved = _merge(resolved, _gitlab_resolved(doc, doc[parent]))
    return _merge(resolved, {k: v for k, v in spec.items() if k != "extends"})


def load_gitlab(path: Path) -> Pipeline:
    """The jobs of a .gitlab-ci.yml; a job's events come from its ``rules: - if:``."""
    doc = yaml.safe_load(path.read_text())
    jobs = []
    for name, spec in doc.items():
        if name in GITLAB_KEYWORDS or str(name).startswith(".") or not isinstance(spec, dict):
            continue
        full = _gitlab_resolved(doc, spec)
        lines = [line for key in ("before_script", "script", "after_script")
                 for line in shell_lines(full.get(key))]
        conditions = " ".join(str(rule.get("if", "")) for rule in full.get("rules", []))
        events = frozenset(re.findall(r'\$CI_PIPELINE_SOURCE\s*==\s*"(\w+)"', conditions))
        jobs.append(Job(name, events, tuple(lines), full))
    return Pipeline("gitlab", path, tuple(jobs), ("$CI_NODE_INDEX", "$CI_NODE_TOTAL"),
                    "merge_request_event", frozenset().union(*(j.events for j in jobs)))


def load_github(path: Path) -> Pipeline:
    """The jobs of a GitHub Actions workflow; a job's events come from its ``if:``."""
    doc = yaml.safe_load(path.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    declared = frozenset([triggers] if isinstance(triggers, str) else triggers or [])
    jobs = []
    for name, spec in doc["jobs"].items():
        lines = [line for step in spec.get("steps", []) for line in shell_lines(step.get("run"))]
        events = frozenset(re.findall(r"github\.event_name\s*==\s*'(\w+)'", str(spec.get("if", ""))))
        jobs.append(Job(name, events or declared, tuple(lines), spec))
    return Pipeline("github", path, tuple(jobs), ("${{ matrix.shard }}", "${{ strategy.job-total }}"),
                    "pull_request", declared)


PIPELINES = {"gitlab": load_gitlab(CI_DIR / "gitlab-ci.yml"),
             "github": load_github(CI_DIR / "github-actions.yml")}
COMMANDS = [c for p in PIPELINES.values() for j in p.jobs for c in job_commands(j)]
GOLDMIG_COMMANDS = [c for c in COMMANDS if goldmig_args(c) is not None]
MAKE_COMMANDS = [c for c in COMMANDS if c.argv[0] == "make"]


def _id(command: Command) -> str:
    return f"{command.job}:{' '.join(command.argv[:3])}"


def subcommand_calls(job: Job, name: str) -> list[tuple[Command, argparse.Namespace]]:
    """The goldmig ``name`` invocations of ``job``, parsed."""
    calls = [(c, check_goldmig(c)) for c in job_commands(job) if goldmig_args(c) is not None]
    return [(c, args) for c, args in calls if args.command == name]


def jobs_for(pipeline: Pipeline, event: str) -> list[Job]:
    """The jobs of ``pipeline`` that ``event`` starts."""
    return [j for j in pipeline.jobs if event in j.events]


def shard_job(pipeline: Pipeline) -> Job:
    """The scheduled job that runs a shard of the matrix."""
    jobs = [j for j in jobs_for(pipeline, "schedule")
            if any(args.shard for _, args in subcommand_calls(j, "run"))]
    assert len(jobs) == 1, f"{pipeline.path}: want one scheduled job running `goldmig run --shard`"
    return jobs[0]


def shard_count(pipeline: Pipeline, job: Job) -> int:
    """How many parallel jobs the shard job becomes (GitLab ``parallel``, GitHub ``matrix.shard``)."""
    if pipeline.kind == "gitlab":
        return int(job.spec["parallel"])
    shards = job.spec["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1)), f"{job.name}: matrix.shard must be 1..N, not {shards}"
    return len(shards)


def needs(job: Job) -> set[str]:
    """The jobs ``job`` waits for."""
    raw = job.spec.get("needs", [])
    return {n["job"] if isinstance(n, dict) else n for n in ([raw] if isinstance(raw, str) else raw)}


def upload_steps(job: Job) -> list[Mapping[str, Any]]:
    """The ``actions/upload-artifact`` steps of a GitHub job."""
    steps: list[Mapping[str, Any]] = job.spec.get("steps", [])
    return [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]


def uploads_always(pipeline: Pipeline, job: Job) -> bool:
    """Whether ``job`` uploads its artifacts whatever its commands did."""
    if pipeline.kind == "gitlab":
        return bool(job.spec.get("artifacts", {}).get("when") == "always")
    uploads = upload_steps(job)
    return bool(uploads) and all("always()" in str(s.get("if", "")) for s in uploads)


def uploaded_paths(pipeline: Pipeline, job: Job) -> list[str]:
    """The paths ``job`` uploads as artifacts."""
    if pipeline.kind == "gitlab":
        return [str(p) for p in job.spec.get("artifacts", {}).get("paths", [])]
    return [p.strip() for s in upload_steps(job) for p in str(s["with"]["path"]).splitlines() if p.strip()]


def leading_comment(path: Path) -> str:
    """The comment block at the top of a file."""
    lines: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return " ".join(lines)


def lines_of(commands: Iterable[Command]) -> list[str]:
    return [c.line for c in commands]


# --- the tests ---------------------------------------------------------------------------------

class TestCommands:
    @pytest.mark.parametrize("command", GOLDMIG_COMMANDS, ids=_id)
    def test_goldmig_invocation_parses(self, command: Command) -> None:
        check_goldmig(command)

    @pytest.mark.parametrize("command", MAKE_COMMANDS, ids=_id)
    def test_make_targets_exist(self, command: Command) -> None:
        check_make(command, makefile_targets())

    @pytest.mark.parametrize("kind", PIPELINES)
    def test_each_pipeline_sets_up_runs_reports_and_patches(self, kind: str) -> None:
        pipeline = PIPELINES[kind]
        commands = [c for job in pipeline.jobs for c in job_commands(job)]
        used = {check_goldmig(c).command for c in commands if goldmig_args(c) is not None}
        assert {"run", "report", "patch"} <= used
        made = {t for c in commands if c.argv[0] == "make" for t in check_make(c, makefile_targets())}
        assert "setup" in made

    @pytest.mark.parametrize("kind", PIPELINES)
    def test_header_says_what_each_job_needs(self, kind: str) -> None:
        header = leading_comment(PIPELINES[kind].path)
        for word in ("x86", "POWER", "root", "bookworm", "namespaces", "goldmig checkout", "submodule"):
            assert word in header, f"{PIPELINES[kind].path}: the top comment does not mention {word!r}"
        for job in PIPELINES[kind].jobs:
            assert job.name in header, f"{PIPELINES[kind].path}: the top comment does not describe {job.name}"


@pytest.mark.parametrize("kind", PIPELINES)
class TestNightly:
    def test_runs_on_a_schedule(self, kind: str) -> None:
        pipeline = PIPELINES[kind]
        assert "schedule" in pipeline.declared_events
        if kind == "github":
            doc = yaml.safe_load(pipeline.path.read_text())
            assert all("cron" in entry for entry in doc[True]["schedule"])

    def test_shards_over_the_ci_index_and_total(self, kind: str) -> None:
        pipeline = PIPELINES[kind]
        job = shard_job(pipeline)
        index, total = pipeline.shard_vars
        for command, args in subcommand_calls(job, "run"):
            assert re.search(r'--shard[ =]"?' + re.escape(f"{index}/{total}"), command.line), command.where()
            assert args.workers == "auto", command.where()
            i, n = (int(x) for x in args.shard.split("/"))
            assert 1 <= i <= n, command.where()
        assert shard_count(pipeline, job) > 1
        if kind == "github":
            assert job.spec["strategy"].get("fail-fast") is False, "a failed shard must not cancel the rest"

    def test_every_shard_sets_up_and_uploads_its_results_always(self, kind: str) -> None:
        pipeline = PIPELINES[kind]
        job = shard_job(pipeline)
        makes = [c for c in job_commands(job) if c.argv[0] == "make"]
        assert any("setup" in check_make(c, makefile_targets()) for c in makes), lines_of(makes)
        assert uploads_always(pipeline, job)
        uploaded = " ".join(uploaded_paths(pipeline, job))
        for name in ("allure-results", "cells.json", "junit.xml"):
            assert name in uploaded

    def test_merge_job_reports_every_shard(self, kind: str) -> None:
        pipeline = PIPELINES[kind]
        shards = shard_job(pipeline)
        merges = [(j, c, args) for j in jobs_for(pipeline, "schedule")
                  for c, args in subcommand_calls(j, "report") if len(args.dirs) > 1]
        assert len(merges) == 1, f"{pipeline.path}: want one scheduled `goldmig report DIR DIR ...`"
        job, command, args = merges[0]
        count = shard_count(pipeline, shards)
        assert len(set(args.dirs)) == len(args.dirs) == count, command.where()
        assert {int(n) for d in args.dirs for n in re.findall(r"\d+", str(d))} == set(range(1, count + 1))
        assert args.out == Path("reports/html"), command.where()
        assert shards.name in needs(job)
        assert uploads_always(pipeline, job)
        assert any(p.rstrip("/") == "reports/html" for p in uploaded_paths(pipeline, job))
        if kind == "gitlab":
            assert job.spec["artifacts"]["reports"]["junit"]
            assert any(rule.get("when") == "always" for rule in job.spec["rules"]), "runs after failed shards"
        else:
            assert re.search(r"!cancelled\(\)|always\(\)", job.spec["if"]), "runs after failed shards"


@pytest.mark.parametrize("kind", PIPELINES)
class TestPerPatch:
    def job(self, kind: str) -> Job:
        pipeline = PIPELINES[kind]
        jobs = [j for j in jobs_for(pipeline, pipeline.change_event) if subcommand_calls(j, "patch")]
        assert len(jobs) == 1, f"{pipeline.path}: want one {pipeline.change_event} job with `goldmig patch`"
        return jobs[0]

    def test_makes_the_series_then_patches_against_the_base_then_reports(self, kind: str) -> None:
        job = self.job(kind)
        lines = list(job.lines)
        [(patch, args)] = subcommand_calls(job, "patch")
        [(report, _)] = subcommand_calls(job, "report")
        series = [i for i, line in enumerate(lines) if "git format-patch -o /tmp/goldmig-series" in line]
        assert series and series[0] < lines.index(patch.line) < lines.index(report.line)
        assert str(args.tree) == "/tmp/goldmig-base" and [str(p) for p in args.series] == [
            "/tmp/goldmig-series/*.patch"]
        assert args.workers == "auto"
        assert "schedule" not in job.events

    def test_uploads_its_reports_always(self, kind: str) -> None:
        job = self.job(kind)
        assert uploads_always(PIPELINES[kind], job)
        uploaded = " ".join(uploaded_paths(PIPELINES[kind], job))
        for name in ("reports/html", "reports/junit.xml", "reports/allure-results"):
            assert name in uploaded


class TestTheCheckerItself:
    """The checker refuses what goldmig would refuse, so the tests above are not vacuous."""

    def nightly_run(self, kind: str) -> Command:
        [(command, _)] = subcommand_calls(shard_job(PIPELINES[kind]), "run")
        return command

    @staticmethod
    def reparse(job: str, line: str) -> Command:
        [command] = [c for c in job_commands(Job(job, frozenset(), (line,), {})) if goldmig_args(c)]
        return command

    @pytest.mark.parametrize("kind", PIPELINES)
    def test_an_invented_option_is_caught(self, kind: str) -> None:
        original = self.nightly_run(kind)
        check_goldmig(original)
        invented = self.reparse(original.job, original.line + " --no-such-option")
        with pytest.raises(CommandError, match="no-such-option") as caught:
            check_goldmig(invented)
        assert original.line in str(caught.value)

    def test_an_option_of_another_subcommand_is_caught(self) -> None:
        with pytest.raises(CommandError, match="--candidate"):
            check_goldmig(self.reparse("j", ".venv/bin/goldmig run --candidate build/qemu-system-ppc64"))

    def test_an_unknown_subcommand_is_caught(self) -> None:
        with pytest.raises(CommandError, match="invalid choice"):
            check_goldmig(self.reparse("j", "goldmig runn -n auto"))

    def test_a_variable_without_a_sample_is_caught(self) -> None:
        with pytest.raises(CommandError, match="SHARD_INDEX"):
            check_goldmig(self.reparse("j", 'goldmig run --shard "$SHARD_INDEX/4"'))

    def test_what_follows_a_double_dash_goes_to_pytest(self) -> None:
        assert check_goldmig(self.reparse("j", "goldmig run -- -x -k pingpong")).command == "run"

    def test_an_unknown_make_target_is_caught(self) -> None:
        [command] = job_commands(Job("j", frozenset(), ("make -C goldmig setup no-such-target",), {}))
        with pytest.raises(CommandError, match="no-such-target"):
            check_make(command, makefile_targets())

    def test_a_goldmig_target_outside_its_checkout_is_caught(self) -> None:
        [command] = job_commands(Job("j", frozenset(), ("make setup",), {}))
        with pytest.raises(CommandError, match="make -C goldmig"):
            check_make(command, makefile_targets())

    def test_continuations_and_chains_are_followed(self) -> None:
        lines = shell_lines("# a comment\nstatus=0; cd . && \\\n  X=1 .venv/bin/goldmig report \\\n"
                            "    a b --out reports/html || status=$?\n")
        assert lines == ["status=0; cd . && X=1 .venv/bin/goldmig report a b --out reports/html || status=$?"]
        [command] = [c for c in job_commands(Job("j", frozenset(), tuple(lines), {})) if goldmig_args(c)]
        assert check_goldmig(command).dirs == [Path("a"), Path("b")]

    def test_the_makefile_targets_are_read(self) -> None:
        targets = makefile_targets()
        assert {"setup", "apt", "venv", "allure", "run", "report", "test"} <= targets
        assert not {"APT_PACKAGES", "VENV", "define"} & targets
