"""``goldmig bench-fuzz``: a million inputs through the stream parser and summariser.

Inputs are generated streams of every record kind (:mod:`.gen`) and
mutations (:mod:`.mutate`) of them and of seeds cut from real recorded
streams in the cache (:mod:`.real`, when there are any). Each goes through
the parser and the summariser under a time limit in a worker process with
a memory ceiling (:mod:`.campaign`); every outcome is classified
(:mod:`.outcome`) and each crash or hang saved once per site
(:mod:`.findings`) to be replayed with ``--replay FILE``. Prints inputs per
second, outcomes, findings, peak RSS and wall time. Deterministic for a
given ``--seed``, ``--count`` and set of real streams.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.paths import cache_root, reports_root
from harness.stream.errors import StreamError
from harness.stream.fuzz import campaign
from harness.stream.fuzz.findings import Findings
from harness.stream.fuzz.inputs import Plan, make_input
from harness.stream.fuzz.minimise import minimise
from harness.stream.fuzz.outcome import Kind, examine_isolated
from harness.stream.fuzz.real import real_seeds
from harness.stream.fuzz.tally import Tally
from harness.stream.fuzz.writer import Seed

MAX_REAL_BYTES = 16 << 20  # cached streams larger than this are not cut into seeds by default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="goldmig bench-fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to run (default 1000000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--time-limit", type=float, default=1.0, metavar="S",
                        help="CPU seconds per input before it counts as a hang (default 1)")
    parser.add_argument("--memory-ceiling", type=int, default=512, metavar="MB",
                        help="address space a worker may add to its start-up size (default 512)")
    parser.add_argument("--out", type=Path, default=None, help="where findings go (default reports/fuzz)")
    parser.add_argument("--stream", type=Path, action="append", default=None,
                        help="a real stream to cut seeds from (repeatable; default: every cached "
                             f"stream up to {MAX_REAL_BYTES >> 20} MB)")
    parser.add_argument("--no-real", action="store_true", help="generated streams only")
    parser.add_argument("--replay", type=Path, metavar="FILE", help="run one saved input and say how it ends")
    parser.add_argument("--minimise", action="store_true",
                        help="with --replay: shrink a crashing input, write FILE.min.bin")
    parser.add_argument("--dump", type=int, metavar="N",
                        help="write input N of --seed to the --out directory (to replay it)")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay, args.time_limit, args.minimise)
    if args.count < 1 or args.jobs < 1:
        parser.error("--count and --jobs must be at least 1")
    out = args.out or reports_root() / "fuzz"
    paths = [] if args.no_real else args.stream or _cached_streams()
    seeds, fdts, notes = _real(paths)
    plan = Plan.make(args.seed, args.count, seeds, fdts)
    if args.dump is not None:
        return dump(plan, args.dump, out)
    findings = Findings(out, args.seed)
    print(f"goldmig bench-fuzz: seed {args.seed}, {args.count} inputs, {args.jobs} worker(s), "
          f"time limit {args.time_limit:g} s, memory ceiling {args.memory_ceiling} MB")
    print(f"real seeds: {len(seeds)} from {len(paths) - len(notes)} stream(s)"
          + (f" in {paths[0].parent}" if paths else " (none cached: generated streams only)"))
    for note in notes:
        print(f"  skipped {note}")
    start = time.monotonic()
    tally = campaign.run(plan, args.jobs, args.time_limit, args.memory_ceiling, findings.add,
                         lambda t: _progress(t, args.count, start))
    print(report(tally, findings, time.monotonic() - start, args.count), end="")
    return 1 if findings.sites or tally.interrupted else 0


def _cached_streams() -> list[Path]:
    return sorted(p for p in (cache_root() / "streams").glob("*.bin") if p.stat().st_size <= MAX_REAL_BYTES)


def _real(paths: list[Path]) -> tuple[list[Seed], list[bytes], list[str]]:
    seeds: list[Seed] = []
    fdts: list[bytes] = []
    notes = []
    for path in paths:
        try:
            found = real_seeds(path)
        except StreamError as exc:
            notes.append(f"{path.name}: {exc}")
            continue
        seeds.extend(found.seeds)
        fdts.extend(f for f in found.fdts if f not in fdts)
    return seeds, fdts, notes


def _progress(tally: Tally, count: int, start: float) -> None:
    kinds = tally.kinds()
    rate = tally.inputs / max(time.monotonic() - start, 1e-9)
    print(f"  {tally.inputs}/{count} inputs, {rate:.0f}/s, crashes {kinds['crash']}, hangs {kinds['hang']}",
          file=sys.stderr, flush=True)


def report(tally: Tally, findings: Findings, wall_s: float, count: int) -> str:
    kinds = tally.kinds()
    origins = sorted({origin for origin, _ in tally.outcomes})
    lines = [
        f"inputs        {tally.inputs} of {count} in {wall_s:.1f} s: {tally.inputs / wall_s:.0f} inputs/s"
        + (" (interrupted)" if tally.interrupted else ""),
        "outcomes      " + ", ".join(f"{k.value} {kinds[k.value]}" for k in Kind),
    ]
    for origin in origins:
        mine = {kind: n for (o, kind), n in tally.outcomes.items() if o == origin}
        lines.append(f"  {origin:19} {sum(mine.values()):8}: "
                     + ", ".join(f"{k.value} {mine.get(k.value, 0)}" for k in Kind))
    seconds, index = tally.slowest
    lines.append(f"slowest input {seconds * 1000:.0f} ms of CPU (input {index}; --dump {index} writes it)")
    lines.append(f"peak RSS      {tally.peak_rss_kb / 1024:.1f} MiB "
                 f"(worker, reached at input {tally.peak_at})")
    lines.append(f"refusals      {len(tally.refusals)} distinct StreamError reasons; most common:")
    lines += [f"  {n:8}  {reason}" for reason, n in tally.refusals.most_common(8)]
    if not findings.sites:
        lines.append("findings      none")
    else:
        lines.append(f"findings      {len(findings.sites)} site(s), saved in {findings.directory}:")
        for key, site in sorted(findings.sites.items(), key=lambda kv: -kv[1].count):
            detail = site.finding.outcome.detail[:150]
            lines.append(f"  {site.count:6} x {key}\n           {site.path.name}: {detail}")
    return "\n".join(lines) + "\n"


def dump(plan: Plan, index: int, directory: Path) -> int:
    item = make_input(plan, index)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"input-{plan.seed}-{index}.bin"
    path.write_bytes(item.data)
    print(f"{path}: {len(item.data)} bytes, {item.origin}: {item.how}")
    return 0


def replay(path: Path, limit_s: float, shrink: bool) -> int:
    """Run one saved input; with ``shrink``, write the smallest input that fails the same way."""
    data = path.read_bytes()
    outcome = examine_isolated(data, limit_s)
    where = f" at offset {outcome.offset}" if outcome.offset is not None else ""
    what = outcome.site or outcome.detail or "parsed and summarised"
    print(f"{path}: {len(data)} bytes: {outcome.kind.value}{where}: {what}")
    if outcome.trace:
        print(outcome.trace, end="")
    failed = outcome.kind in (Kind.CRASH, Kind.HANG)
    if shrink and failed:
        small = minimise(data, lambda d: examine_isolated(d, limit_s).site == outcome.site)
        out = path.with_suffix(".min.bin")
        out.write_bytes(small)
        print(f"minimised to {len(small)} bytes: {out}")
    return 1 if failed else 0


