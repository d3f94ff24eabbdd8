"""Where a run's time went, per scenario: the phase medians ``goldmig bench`` prints after its
per-cell table, so that two runs (an old and a new guest image, say) compare at a glance."""

from __future__ import annotations

from collections.abc import Iterable
from statistics import median

from harness.report.run_summary import CellOutcome
from harness.scenarios import SCENARIOS
from harness.scenarios.steps import HELLO

PHASES = ("boot", "migrate", "check", "total")
RED = frozenset({"failed", "known", "broken"})
"""Outcomes of a cell that did not pass (and ran): what "a failing cell" costs."""


def scenario_of(cell: str) -> str:
    """The scenario a cell id names (its last part is ``<scenario>[-<variant>]``)."""
    last = cell.rsplit("/", 1)[-1]
    names = [n for n in SCENARIOS if last == n or last.startswith(n + "-")]
    return max(names, key=len) if names else last


def source_build(cell: str) -> str:
    """The source build a cell id names (``libvirt:kvm:qemu-7.2>...`` is ``qemu-7.2``)."""
    return cell.split(">", 1)[0].rsplit(":", 1)[-1]


def hello_medians(outcomes: Iterable[CellOutcome]) -> list[str]:
    """Per source build and CPU count: the median time from ``cont`` to the agent's hello (the
    firmware, the guest kernel and init), from each cell's ``hello-<n>cpu`` timing."""
    samples: dict[tuple[str, str], list[float]] = {}
    for o in outcomes:
        for key, seconds in o.phases.items():
            if key.startswith(f"{HELLO}-"):
                samples.setdefault((source_build(o.cell), key.removeprefix(f"{HELLO}-")), []).append(seconds)
    if not samples:
        return []
    return ["cont to the agent's hello, median per source build (s):", *(
        f"  {build:12} {cpus:>5}  {median(times):5.2f}  (max {max(times):5.2f}, {len(times)} boots)"
        for (build, cpus), times in sorted(samples.items()))]


def scenario_medians(outcomes: Iterable[CellOutcome]) -> list[str]:
    """A table: per scenario, its cells' median of each phase (seconds), then the median total of
    the passing and of the red cells overall."""
    ran = [o for o in outcomes if o.outcome != "skipped" and o.phases.get("total")]
    if not ran:
        return ["no cell ran"]
    lines = [f"{'median per scenario (s)':24}  {'cells':>5}  " + "  ".join(f"{p:>7}" for p in PHASES)]
    for scenario in sorted({scenario_of(o.cell) for o in ran}):
        cells = [o for o in ran if scenario_of(o.cell) == scenario]
        lines.append(f"{scenario:24}  {len(cells):5}  " + "  ".join(
            f"{median(o.phases.get(p, 0.0) for o in cells):7.2f}" for p in PHASES))
    for label, group in (("passed", [o for o in ran if o.outcome == "passed"]),
                         ("red (failed, known, broken)", [o for o in ran if o.outcome in RED])):
        if group:
            lines.append(f"median {label} cell: {median(o.phases['total'] for o in group):.2f} s "
                         f"over {len(group)} cells")
    return lines
