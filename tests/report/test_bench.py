"""goldmig bench's per-scenario medians."""

from __future__ import annotations

from harness.report.bench import hello_medians, scenario_medians, scenario_of
from harness.report.run_summary import CellOutcome


def test_a_cell_id_names_its_scenario_by_the_longest_match() -> None:
    assert scenario_of("qemu-7.2>qemu-10.0/latest-common/pcihotplug-phb1-plug-0ms") == "pcihotplug"
    assert scenario_of("libvirt:qemu-7.2>qemu-10.0/latest-common/hotplug-memory-0ms") == "hotplug"
    assert scenario_of("kvm:qemu-7.2>qemu-7.2/latest-common/pingpong") == "pingpong"


def _cell(cell: str, outcome: str, boot: float, total: float) -> CellOutcome:
    return CellOutcome(cell, outcome, phases={"boot": boot, "migrate": 0.5, "check": 1.0, "total": total})


def test_medians_per_scenario_and_of_passing_and_red_cells() -> None:
    lines = scenario_medians([
        _cell("a>b/m/baseline-idle", "passed", 1.0, 3.0),
        _cell("a>b/m/baseline-busy", "known", 2.0, 5.0),
        _cell("a>b/m/baseline-timer", "passed", 3.0, 4.0),
        _cell("a>b/m/phb-windows", "skipped", 0.0, 0.0),
    ])
    assert lines[1].split() == ["baseline", "3", "2.00", "0.50", "1.00", "4.00"]
    assert lines[2:] == ["median passed cell: 3.50 s over 2 cells",
                         "median red (failed, known, broken) cell: 5.00 s over 1 cells"]


def test_hello_medians_per_source_build_and_cpu_count() -> None:
    def cell(name: str, key: str, seconds: float) -> CellOutcome:
        return CellOutcome(name, "passed", phases={key: seconds, "total": 3.0})
    lines = hello_medians([cell("qemu-7.2>qemu-10.0/m/baseline-idle", "hello-2cpu", 0.6),
                           cell("libvirt:qemu-7.2>qemu-7.2/m/baseline-idle", "hello-2cpu", 0.8),
                           cell("qemu-7.2>qemu-7.2/m/phb-windows", "hello-1cpu", 0.5)])
    assert [line.split() for line in lines[1:]] == [
        ["qemu-7.2", "1cpu", "0.50", "(max", "0.50,", "1", "boots)"],
        ["qemu-7.2", "2cpu", "0.70", "(max", "0.80,", "2", "boots)"]]
