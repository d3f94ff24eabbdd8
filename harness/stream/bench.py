"""Benchmark: goldmig's stream summary against QEMU's analyze-migration.py, same streams.

Streams (recorded with :mod:`.corpus`, cached): a stopped QEMU 7.2 pseries
machine (small), a running golden guest with 512 MB RAM (the reference),
and a stopped machine with 1.5 GB of RAM filled with data (large; skip with
``--no-large``). Each tool runs as its own process with the same Python,
best of ``--repeat`` runs: ``python -m harness.stream summary FILE`` against
``analyze-migration.py -f FILE`` (its default full ``-d state`` dump); the
time of ``-d desc`` (vmdesc only) is shown for reference, and goldmig's time
inside one process (no interpreter start-up). Peak RSS comes from wait4().
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.stream import corpus
from harness.stream.peer import PeerScripts, ensure_peer_scripts
from harness.stream.render import table
from harness.stream.summary import summarise


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_kb: int


@dataclass(frozen=True)
class Measurement:
    name: str
    path: str
    size: int
    goldmig: Run
    goldmig_in_process_s: float
    analyze: Run
    analyze_desc: Run

    @property
    def ratio(self) -> float:
        return self.analyze.seconds / self.goldmig.seconds


def run(argv: list[str]) -> Run:
    """Wall time and peak RSS of one process (output discarded)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {stderr[-1000:]}")
    return Run(elapsed, usage.ru_maxrss)


def best(argv: list[str], repeat: int) -> Run:
    runs = [run(argv) for _ in range(repeat)]
    return Run(min(r.seconds for r in runs), max(r.peak_rss_kb for r in runs))


def measure(name: str, path: Path, peer: PeerScripts, repeat: int) -> Measurement:
    goldmig = best([sys.executable, "-m", "harness.stream", "summary", str(path)], repeat)
    in_process = []
    for _ in range(repeat):
        start = time.perf_counter()
        summarise(path).to_text()
        in_process.append(time.perf_counter() - start)
    analyze = best([sys.executable, str(peer.analyze), "-f", str(path)], repeat)
    desc = best([sys.executable, str(peer.analyze), "-f", str(path), "-d", "desc"], repeat)
    return Measurement(name, str(path), path.stat().st_size, goldmig, min(in_process), analyze, desc)


def report(results: list[Measurement], peer: PeerScripts) -> str:
    rows = [
        [m.name, f"{m.size / 1e6:.1f} MB", f"{m.goldmig.seconds:.3f}", f"{m.goldmig_in_process_s:.3f}",
         f"{m.analyze.seconds:.2f}", f"{m.ratio:.1f}x", f"{m.goldmig.peak_rss_kb / 1024:.1f} MiB",
         f"{m.analyze.peak_rss_kb / 1024:.1f} MiB", f"{m.analyze_desc.seconds:.2f}"]
        for m in results
    ]
    head = [
        f"analyze-migration.py from Debian {peer.suite} qemu {peer.version}; "
        f"python {sys.version.split()[0]}; times in seconds, best of runs",
    ]
    cols = ["stream", "size", "goldmig", "(in-proc)", "analyze", "ratio", "goldmig RSS",
            "analyze RSS", "analyze -d desc"]
    return "\n".join(head + table(cols, rows)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.stream.bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-large", action="store_true", help="skip the 1.6 GB stream")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    peer = ensure_peer_scripts()
    streams = [
        ("small: stopped, 256 MB", corpus.stopped_stream("7.2", "xive").path),
        ("running guest, 512 MB", corpus.running_stream("7.2", "dual", machine="pseries-7.2").path),
    ]
    if not args.no_large:
        streams.append(("large: 1.5 GB of data", corpus.filled_stream("7.2").path))
    results = [measure(name, path, peer, args.repeat) for name, path in streams]
    if args.json:
        print(json.dumps([{**asdict(m), "ratio": m.ratio} for m in results], indent=1))
    else:
        sys.stdout.write(report(results, peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
