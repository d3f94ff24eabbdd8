"""caps: a source with a spapr capability above what the destination allows.

Guards against a destination that accepts a guest it cannot honour: a guest
that saw VSX, DFP, the large decrementer, 16M HPT pages, FWNMI, nested HV or
AIL mode 3 on the source must not wake up on a destination that lacks it
(the guest would take illegal-instruction or machine-check faults, or lose
its decrementer width). QEMU refuses it in the spapr machine's post_load
(hw/ppc/spapr_caps.c ``spapr_caps_post_migration``: "cap-X higher level (N)
in incoming stream than on destination (M)"). The cell passes when the
migration fails with that message naming the capability, the source guest
carries on undisturbed (every CPU ticks and makes progress after the failure,
its timebase never goes backwards), and the destination does not run.

The migration runs with QEMU's ``return-path`` capability on both sides: it is
how the source learns that the destination refused the stream (without it the
source has sent everything, reports "completed" and stays paused). With it,
QEMU fails the migration and resumes the source by itself.

Variants, one per capability that TCG lets us vary (tried on QEMU 7.2 and
10.0 with ``-cpu POWER9``): vsx, dfp, large-decr, hpt-max-page-size (16M to
64k), fwnmi and ail-mode-3 (default on; destination off), nested-hv (source
on; default off). Left out: cap-rpt-invalidate ("No H_RPT_INVALIDATE support
in TCG"), cap-dawr1 ("DAWR1 supported only on POWER10 and later CPUs"),
cap-cfpc/sbbc/ibs/ccf-assist/htm (TCG cannot provide the higher values: every TCG
guest starts with cfpc/sbbc/ibs=broken, ccf-assist=off and htm=off, as
harness/qemu/machine.py sets them), cap-nested-papr (10.0 only and exclusive with nested-hv; needs a
POWER10 guest to mean anything). ail-mode-3 exists only in 10.0, so its cells
on other builds are skipped by the seam; nested-hv needs QEMU 7.0 on both sides
(5.2's TCG says "No Nested KVM-HV support in TCG"), skipped by its Needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import equal
from harness.checks.result import CheckResult, Limits
from harness.errors import MigrationFailed, MigrationTimeout, QemuCrashed
from harness.scenarios.declare import MachineChange, Needs, Scenario, Variant
from harness.scenarios.steps import CarriedOn, boot, carried_on, start_pair

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side


SETTLE_S = 10.0
"""How long the source may take to fail its migration and resume after the destination exits."""


@dataclass(frozen=True)
class CapsObservations:
    capability: str
    migration_outcome: str
    """``completed``, or the error type and QEMU's messages (the destination's included)."""
    source_status: str
    destination_state: str
    """The destination's run state, or how its process ended."""
    source: CarriedOn

    def checks(self, limits: Limits) -> list[CheckResult]:
        refused = not self.migration_outcome.startswith("completed")
        named = f"cap-{self.capability} higher level"
        return [
            CheckResult(f"destination refuses cap-{self.capability} above its own", refused,
                        "migration failed", self.migration_outcome.splitlines()[0],
                        "QEMU's migration outcome on the source (return-path on)"),
            CheckResult("QEMU's message names the capability", named in self.migration_outcome,
                        f"{named} ... in incoming stream than on destination",
                        _line_with(self.migration_outcome, "cap-")
                        or _line_with(self.migration_outcome, "qemu-system") or "no message from QEMU",
                        "the destination's output (hw/ppc/spapr_caps.c spapr_caps_post_migration)"),
            CheckResult("destination is not running", self.destination_state != "running"
                        and not self.destination_state.startswith("was killed"),
                        "not running, and not crashed", self.destination_state,
                        "query-status on destination, or how its process ended"),
            equal("source runs the guest again", "running", self.source_status,
                  "query-status on source after the failed migration"),
            *self.source.checks(),
        ]


def _line_with(text: str, needle: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if needle in line), None)


def run(ctx: ScenarioContext, variant: Variant[str]) -> CapsObservations:
    src, dst = start_pair(ctx)
    before = boot(ctx, src)
    for side in (src, dst):
        side.monitor.cmd("migrate-set-capabilities",
                         capabilities=[{"capability": "return-path", "state": True}])
    try:
        ctx.migrate(src, dst)
        outcome = "completed"
    except (MigrationFailed, MigrationTimeout) as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    source_status = _settled(src)
    destination = _state(dst)
    # Only a source that runs the guest again can carry on; otherwise nothing is measured.
    source = (carried_on(ctx, src, before) if source_status == "running"
              else CarriedOn(dict.fromkeys(before.cpus), dict.fromkeys(before.cpus), None))
    return CapsObservations(variant.data, outcome, source_status, destination, source)


def _settled(src: Side) -> str:
    """The source's run state once its migration has ended: the destination's exit can be seen
    before the source's return path reports it (the source then still says finish-migrate)."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        migration = src.monitor.cmd("query-migrate").get("status")
        status = str(src.monitor.cmd("query-status")["status"])
        if migration in ("completed", "failed", "cancelled") and status != "finish-migrate":
            return status
        time.sleep(0.05)
    return status


def _state(side: Side) -> str:
    """``side``'s run state, or how it ended: a destination that refused the stream exits."""
    if side.alive():
        try:
            return str(side.monitor.cmd("query-status")["status"])
        except QemuCrashed:  # it exited while we asked: say how, below
            pass
    deadline = time.monotonic() + 5.0
    while side.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return side.ended()


def _above(cap: str, source: str, destination: str, description: str,
           needs: Needs | None = None) -> Variant[str]:
    """The source runs ``cap-<cap>=<source>``, the destination only allows ``<destination>``."""
    return Variant(cap, cap, source=MachineChange(properties=((f"cap-{cap}", source),)),
                   destination=MachineChange(properties=((f"cap-{cap}", destination),)),
                   needs=needs or Needs(), description=description)


SCENARIO = Scenario(
    name="caps",
    description="a spapr capability above what the destination allows: refused, source carries on",
    run=run,
    variants=(
        _above("vsx", "on", "off", "VSX on the source, off on the destination"),
        _above("dfp", "on", "off", "decimal floating point on the source only"),
        _above("large-decr", "on", "off", "the large decrementer on the source only"),
        _above("hpt-max-page-size", "16M", "64k", "16M HPT pages on the source, 64k at most there"),
        _above("fwnmi", "on", "off", "firmware-assisted NMI on the source only"),
        # TCG emulates nested HV since QEMU 7.0; 5.2 refuses it ("No Nested KVM-HV support in TCG").
        _above("nested-hv", "on", "off", "nested KVM-HV on the source only", Needs(min_qemu=(7, 0))),
        _above("ail-mode-3", "on", "off", "AIL mode 3 on the source only (QEMU 10.0's property)"),
    ),
)
