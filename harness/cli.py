"""goldmig's command line: run the matrix, benchmark it, list cells, build the guest."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError, GoldmigError
from harness.guest.image import DEFAULT_KERNEL, KERNELS
from harness.paths import REPO_ROOT, reports_root
from harness.report.bench import hello_medians, scenario_medians
from harness.report.run_summary import CellOutcome, read_cells_json

PHASES = ("provision", "boot", "migrate", "check")


def build_parser() -> argparse.ArgumentParser:
    """Every goldmig command and its options (also read by the tests of the CI examples)."""
    parser = argparse.ArgumentParser(prog="goldmig", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run a selection of the matrix (default: its default_selection)"),
                       ("bench", "run a selection and print where each cell's time went"),
                       ("cells", "list the cell ids of a selection")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"))
        p.add_argument("--select", default=None, help="named selection (smoke, nightly, ...)")
        p.add_argument("--shard", default=None, metavar="I/N", help="only shard I of N of the cells")
        if name != "cells":
            p.add_argument("-n", "--workers", default="0",
                           help="parallel cells (pytest-xdist -n; 'auto' for one per core)")
            p.add_argument("--repeat", type=int, default=1, metavar="N",
                           help="run each cell N times; the summary gives pass counts and flaky cells")
            p.add_argument("--guest-kernel", choices=KERNELS, default=None,
                           help="boot the golden guest with this kernel instead of the matrix's "
                                "guest.kernel (goldmig bench --guest-kernel debian: the old image)")
    guest = sub.add_parser("guest", help="build (or find cached) the golden guest and print its identity")
    guest.add_argument("--kernel", choices=KERNELS, default=DEFAULT_KERNEL,
                       help="goldmig: our own kernel (guests/golden/kernel/); debian: Debian's "
                            "generic kernel package (default: %(default)s)")
    patch = sub.add_parser("patch", help="a per-patch job: the candidate against its base, cell by "
                           "cell and check by check, with every reference build (without a base: "
                           "against the known failures)")
    patch.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"))
    patch.add_argument("--tree", type=Path, default=None,
                       help="a QEMU source tree: the base is the tree as it is, the candidate the "
                            "tree plus --series (both built here, cached)")
    patch.add_argument("--series", type=Path, nargs="+", default=[], metavar="PATCH",
                       help="the patch series, in order (git format-patch files or an mbox)")
    patch.add_argument("--configure", action="append", default=[], metavar="ARG",
                       help="an extra configure argument for --tree builds (repeatable)")
    patch.add_argument("--base", default=None,
                       help="a ready base: a build name of the matrix, or a qemu-system-ppc64 path")
    patch.add_argument("--candidate", default=None,
                       help="a ready candidate: a build name of the matrix, or a qemu-system-ppc64 path")
    patch.add_argument("--firmware", type=Path, default=None,
                       help="SLOF and VOF for a path build, or for a tree without them (pc-bios)")
    patch.add_argument("--machines", default=None,
                       help="comma-separated machine types (default: the newest each pair of builds shares, "
                            "and pseries-7.2)")
    patch.add_argument("--scenarios", default=None,
                       help="comma-separated scenarios or scenario-variants (default: one of each family "
                            "a patch can break with the candidate and base on both sides, baseline-idle "
                            "with each reference build)")
    patch.add_argument("--again", type=int, default=2, metavar="N",
                       help="runs more of each cell pair whose checks differ, to tell a flaky check "
                            "from a break (default 2)")
    patch.add_argument("-n", "--workers", default="0")
    bis = sub.add_parser("bisect", help="the first commit of a QEMU repository at which a cell's "
                         "check flips (git bisect run, source builds, the one cell)")
    bis.add_argument("cell", help="the cell, the bisected build named candidate, e.g. "
                                  "qemu-10.0>candidate/pseries-10.0/baseline-idle")
    bis.add_argument("--tree", type=Path, required=True, help="the QEMU git repository")
    bis.add_argument("--good", required=True, help="a commit where the check passes")
    bis.add_argument("--bad", required=True, help="a commit where it fails")
    bis.add_argument("--check", default=None, help="the check id (default: the one that flips "
                                                    "between --good and --bad)")
    bis.add_argument("--firmware", type=Path, default=None, help="SLOF and VOF, if the tree has none")
    bis.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"),
                     help="its builds and known failures; the cell's group must include candidate")
    faults = sub.add_parser("faults", help="the fault campaign (kill/stop each side at boot, "
                            "mid-migration, during checks) on one build, with a table")
    faults.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"))
    faults.add_argument("--build", default=None, help="build to fault (default: the matrix's first)")
    faults.add_argument("--machine", default="latest-common", help="machine type (default: latest-common)")
    faults.add_argument("-n", "--workers", default="0")
    thr = sub.add_parser("bench-throughput", help="cells per minute at several worker counts")
    thr.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"))
    thr.add_argument("--select", default="nightly")
    thr.add_argument("--workers", default="1,2", help="comma-separated -n values")
    prov = sub.add_parser("bench-provisioning", help="a Debian-suite build, cold and cached")
    prov.add_argument("--suite", default="trixie")
    for name, text in (("show", "summarise a migration stream: show FILE [--json]"),
                       ("diff", "compare two streams, what breaks first: diff A B [--json]"),
                       ("bench-stream", "parse speed and memory against QEMU's analyze-migration.py"),
                       ("bench-fuzz", "a million generated and mutated streams through the parser")):
        sub.add_parser(name, help=text, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    save = sub.add_parser("save", help="save a golden stream: save BUILD MACHINE FILE")
    save.add_argument("build")
    save.add_argument("machine")
    save.add_argument("file", type=Path)
    save.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"))
    save.add_argument("--stopped", action="store_true", help="a stopped machine, no guest running")
    build = sub.add_parser("build", help="provision a build of the matrix (a source build: compile "
                           "it, or find it cached) and print where its QEMU is")
    build.add_argument("build", help="build name in the matrix")
    build.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"))
    source = sub.add_parser("source", help="fetch and unpack a Debian suite's QEMU source package "
                            "(a tree for `kind: source`) and print where it is")
    source.add_argument("suite", help="Debian suite, e.g. trixie")
    standin = sub.add_parser("standin", help="stand-in lab hosts and a matrix for them, until Ctrl-C")
    standin.add_argument("--out", type=Path, default=None,
                         help="where to write their matrix (default: reports/standin-lab.yaml)")
    standin.add_argument("--suite", default="trixie", help="Debian suite whose QEMU they run")
    rep = sub.add_parser("report", help="build reports/html (Allure 3, with history and the matrix view) "
                         "from the run's results, or merge the results directories named")
    rep.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                     help="allure-results directories to merge (default: reports/allure-results)")
    rep.add_argument("--out", type=Path, default=None, help="where to build it (default: reports/html)")
    rep.add_argument("--serve", action="store_true",
                     help="then serve it on http://127.0.0.1:PORT/ until Ctrl-C")
    rep.add_argument("--port", type=int, default=8080, help="for --serve (default 8080; 0: any free port)")
    rec = sub.add_parser("bench-recording", help="what recording the stream adds to a migration")
    rec.add_argument("--matrix", default=str(REPO_ROOT / "matrix.yaml"))
    rec.add_argument("--cell", default="qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle")
    rec.add_argument("--repeat", type=int, default=5)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    # CI and schedulers stop a run with SIGTERM: unwind like Ctrl-C so every
    # cell's context managers kill their QEMU processes.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "guest":
            return _guest(args.kernel)
        if args.command in ("show", "diff"):
            from harness.stream.__main__ import main as stream_main

            return stream_main(["summary" if args.command == "show" else "diff", *args.rest, *extra])
        if args.command == "bench-stream":
            from harness.stream.bench import main as stream_bench

            return stream_bench([*extra, *args.rest])  # leading options land in extra
        if args.command == "bench-fuzz":
            from harness.stream.fuzz.command import main as stream_fuzz

            return stream_fuzz([*extra, *args.rest])  # leading options land in extra
        if args.command == "save":
            from harness.matrix.load import load_matrix
            from harness.stream.golden import save_stream

            out = save_stream(load_matrix(Path(args.matrix)), args.build, args.machine, args.file,
                              running=not args.stopped)
            print(f"saved {out} ({out.stat().st_size} bytes)")
            return 0
        if args.command == "build":
            return _build(args)
        if args.command == "source":
            from harness.builds.debian_source import qemu_source

            print(qemu_source(args.suite))
            return 0
        if args.command == "standin":
            from harness.commands.standin import serve

            out = args.out or reports_root() / "standin-lab.yaml"
            out.parent.mkdir(parents=True, exist_ok=True)
            serve(out, args.suite)
            return 0
        if args.command == "report":
            from harness.report.command import report

            return report(args.dirs, args.out, args.serve, args.port)
        if args.command == "patch":
            return _patch(args, extra)
        if args.command == "bisect":
            from harness.commands.bisect import bisect

            print("\n".join(bisect(Path(args.matrix), args.cell, args.tree, args.good, args.bad,
                                   args.firmware, args.check)))
            return 0
        if args.command == "faults":
            return _faults(args, extra)
        if args.command == "bench-throughput":
            from harness.commands.benchmarks import throughput

            print("\n".join(throughput(Path(args.matrix), args.select, args.workers.split(","))))
            return 0
        if args.command == "bench-provisioning":
            from harness.commands.benchmarks import provisioning

            print("\n".join(provisioning(args.suite)))
            return 0
        if args.command == "bench-recording":
            from harness.commands.benchmarks import recording_overhead
            from harness.matrix.load import load_matrix

            print("\n".join(recording_overhead(load_matrix(Path(args.matrix)), args.cell, args.repeat)))
            return 0
        if args.command == "cells":
            return _cells(args)
        code = _pytest(args, extra)
        if args.command == "bench":
            _print_bench(reports_root() / "cells.json")
        return code
    except GoldmigError as exc:
        print(f"goldmig: {exc}", file=sys.stderr)
        return 2


def _cells(args: argparse.Namespace) -> int:
    """Print the selection's cell ids, one per line, in the order a run takes them."""
    from harness.matrix.load import load_matrix
    from harness.pytest_plugin import parse_shard, selected_cells, selection_of

    matrix = load_matrix(Path(args.matrix))
    try:
        selection, shard = selection_of(matrix, args.select), parse_shard(args.shard)
    except ValueError as exc:
        option, _, problem = str(exc).partition(" ")
        raise ConfigError("the command line", option, problem) from None
    print("\n".join(c.id for c in selected_cells(matrix, selection, shard)))
    return 0


def _build(args: argparse.Namespace) -> int:
    """Provision one build of the matrix on this machine and say what it is."""
    import time

    from harness.matrix.load import load_matrix

    matrix = load_matrix(Path(args.matrix))
    if args.build not in matrix.builds:
        raise ConfigError(matrix.source, "builds", f"no build {args.build!r}; the matrix has "
                          f"{', '.join(matrix.builds)}")
    started = time.monotonic()
    build = matrix.builds[args.build].provision()
    print(f"{build.name}: {build.root / build.binary.lstrip('/')}"
          + (f"\n  firmware {build.firmware_dir}" if build.firmware_dir else "")
          + (f"\n  {build.package}" if build.package else "")
          + f"\n  ready in {time.monotonic() - started:.1f} s")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _pytest(args: argparse.Namespace, extra: list[str], fresh: bool = True) -> int:
    """Run the suite; ``fresh`` False adds to the run's Allure results instead of replacing them."""
    reports = reports_root()
    options = [
        str(REPO_ROOT / "suite"), "--matrix", args.matrix,
        "-p", "no:cacheprovider", "-q", "-r", "fE",
    ]
    if args.select:
        options += ["--select", args.select]
    if args.shard:
        options += ["--shard", args.shard]
    if getattr(args, "repeat", 1) != 1:
        options += ["--repeat", str(args.repeat)]
    if getattr(args, "workers", "0") != "0":
        options += ["-n", args.workers]
    if getattr(args, "guest_kernel", None):
        options += ["--guest-kernel", args.guest_kernel]
    if "--collect-only" not in extra:
        options += ["--alluredir", str(reports / "allure-results"),
                    "--junitxml", str(reports / JUNIT_PARTIAL)]
        options += ["--clean-alluredir"] if fresh else []
        (reports / "cells.json").unlink(missing_ok=True)
    code = int(pytest.main([*options, *extra]))
    if "--collect-only" not in extra:
        _finish_junit(reports / JUNIT_PARTIAL, reports / "junit.xml")
    return code


JUNIT_PARTIAL = "junit.xml.partial"
"""pytest writes here; the file becomes junit.xml only when it is complete."""


def _finish_junit(partial: Path, final: Path) -> None:
    """Publish junit.xml whole, or leave the last complete one and say why."""
    import xml.etree.ElementTree as ElementTree

    if not partial.exists():
        return
    try:
        ElementTree.parse(partial)
    except ElementTree.ParseError as exc:
        print(f"goldmig: {partial} is incomplete ({exc}); junit.xml not updated", file=sys.stderr)
        partial.unlink()
        return
    partial.replace(final)


def _patch(args: argparse.Namespace, extra: list[str]) -> int:
    from harness.commands.patch import build_entry, patch_matrix, source_entries, write_generated_matrix
    from harness.matrix.load import load_matrix

    matrix = load_matrix(Path(args.matrix))
    base: dict[str, Any] | None
    if args.tree is not None:
        if args.base or args.candidate:
            raise ConfigError("the command line", "--tree", "builds the base and the candidate; "
                              "give --base and --candidate only without it")
        base, candidate = source_entries(args.tree, args.series, args.configure, args.firmware)
    elif args.candidate is not None:
        candidate = build_entry(matrix, args.candidate, args.firmware)
        base = build_entry(matrix, args.base, args.firmware) if args.base else None
    else:
        raise ConfigError("the command line", "--tree/--candidate", "give a source tree (--tree, with "
                          "--series) or a ready candidate (--candidate, with --base to compare)")
    data = patch_matrix(matrix, candidate, base, args.machines.split(",") if args.machines else None,
                        args.scenarios.split(",") if args.scenarios else None,
                        frozenset(b for b in (args.base, args.candidate) if b in matrix.builds))
    args.matrix = str(write_generated_matrix(data, reports_root() / "patch-matrix.yaml", "patch"))
    args.select = args.shard = None
    code = _pytest(args, extra)
    if base is None:
        return code
    from harness.commands.patch_job import judge_against_base

    return judge_against_base(args, lambda again: _pytest(args, [*extra, *again], fresh=False))


def _faults(args: argparse.Namespace, extra: list[str]) -> int:
    from harness.commands.fault_campaign import faults_matrix, table
    from harness.commands.patch import write_generated_matrix
    from harness.matrix.load import load_matrix

    data = faults_matrix(load_matrix(Path(args.matrix)), args.build, args.machine)
    args.matrix = str(write_generated_matrix(data, reports_root() / "faults-matrix.yaml", "faults"))
    args.select = args.shard = None
    code = _pytest(args, extra)
    if (reports_root() / "cells.json").exists():
        print("\n".join(table(reports_root())))
    return code


def _guest(kernel: str) -> int:
    from harness.guest.image import ensure_golden_image

    image = ensure_golden_image(kernel=kernel)
    k = image.kernel_identity()
    print(f"{image.image_id}\n"
          f"  kernel  {k.kind}: {k.kernel_id}, version {k.version}\n"
          f"          {k.origin}\n"
          f"  sha256  {k.sha256}\n"
          f"  vmlinux {image.kernel}\n"
          f"  initrd  {image.initrd}")
    return 0


def _print_bench(path: Path) -> None:
    if not path.exists():
        print("goldmig bench: no cells ran", file=sys.stderr)
        return
    outcomes = read_cells_json(path)
    width = max(len(o.cell) for o in outcomes)
    print(f"\n{'cell':{width}}  " + "  ".join(f"{p:>9}" for p in (*PHASES, "overhead", "total")))
    for o in outcomes:
        total = o.phases.get("total", 0.0)
        overhead = total - sum(o.phases.get(p, 0.0) for p in PHASES)
        cols = [o.phases.get(p, 0.0) for p in PHASES] + [overhead, total]
        print(f"{o.cell:{width}}  " + "  ".join(f"{c:9.2f}" for c in cols) + f"  {o.outcome}")
    print()
    print("\n".join([*scenario_medians(outcomes), *hello_medians(outcomes)]))
    _print_driver_cost(outcomes)


def _print_driver_cost(outcomes: list[CellOutcome]) -> None:
    """What another driver adds to a cell: its phases minus its direct-driver twin's."""
    direct = {o.cell: o for o in outcomes}
    pairs = [(o, direct[name]) for o in outcomes if ":" in o.cell
             and (name := o.cell.split(":", 1)[1]) in direct]
    if not pairs:
        return
    width = max(len(o.cell) for o, _ in pairs)
    phases = ("boot", "migrate", "check", "total")
    print(f"\n{'added by the driver (s)':{width}}  " + "  ".join(f"{p:>9}" for p in phases))
    for other, twin in pairs:
        print(f"{other.cell:{width}}  " + "  ".join(
            f"{other.phases.get(p, 0.0) - twin.phases.get(p, 0.0):+9.2f}" for p in phases))
    added = sorted(o.phases.get("total", 0.0) - t.phases.get("total", 0.0) for o, t in pairs)
    print(f"median added per cell: {added[len(added) // 2]:+.2f} s over {len(pairs)} cells")


if __name__ == "__main__":
    sys.exit(main())
