"""vmstate: the cheap pre-flight. Compare both builds' ``-dump-vmstate`` for the cell's machine
type, source to destination, like QEMU's vmstate-static-checker, over the devices this
machine really migrates (the sections of a stream the source build saves for it).

Blind spot, shared with QEMU's own checker: ``-dump-vmstate`` lists devices
by their class's vmsd, and the CPU's state (``cpu``, with ``cpu/slb``) is
registered per instance, so it is not in the dump. The stream diff attached to
a failed migration does see it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.result import CheckResult, Limits
from harness.errors import QemuCrashed
from harness.scenarios.declare import Needs, Scenario, single
from harness.stream import StaticCheck, static_check, summarise

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.scenarios.declare import Variant


@dataclass(frozen=True)
class VmstateObservations:
    devices: tuple[str, ...]
    report: StaticCheck

    def checks(self, limits: Limits) -> list[CheckResult]:
        breaking = self.report.errors
        return [CheckResult(
            "destination can load every vmstate the source sends (static check)", breaking == 0,
            f"{len(self.devices)} devices of this machine", f"{breaking} breaking findings",
            self.report.to_text(),
        )]


def run(ctx: ScenarioContext, variant: Variant[None]) -> VmstateObservations:
    # These record and dump with the builds on this machine: runtime only.
    from harness.stream.golden import stopped_machine
    from harness.stream.recorder import RecordError, dump_vmstate, record_stream

    source, destination = ctx.builds
    with ctx.phase("check"):
        sections = summarise(record_stream(source, stopped_machine(ctx.setup)).path).as_dict()["sections"]
        devices = tuple(sorted({s["idstr"].rsplit("/", 1)[-1] for s in sections}))
        try:
            dumps = [dump_vmstate(build, ctx.setup.machine) for build in (source, destination)]
        except RecordError as exc:
            if _killed_by_signal(str(exc)):
                raise QemuCrashed(f"-dump-vmstate crashed: {exc}") from exc
            raise
        report = static_check(dumps[0], dumps[1], only=set(devices))
        (ctx.rundir / "vmstate-static-check.txt").write_text(report.to_text())
        return VmstateObservations(devices, report)


def _killed_by_signal(message: str) -> bool:
    """A negative exit code (the process) or 128+N (bwrap reporting its child's signal)."""
    code = re.search(r"\(exit (-?\d+)\)", message)
    return code is not None and (int(code[1]) < 0 or int(code[1]) > 128)


SCENARIO = Scenario(
    name="vmstate",
    description="both builds' -dump-vmstate compared, no guest",
    run=run,
    variants=single(),
    needs=Needs(local_builds=True),
)
