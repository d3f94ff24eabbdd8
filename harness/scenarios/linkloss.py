"""linkloss: the link dies in the middle of a migration; the source must carry on.

The migration is slowed (max-bandwidth) so that it is still running when the
transport's link is cut after a few megabytes. QEMU must report the migration
failed (or let it be cancelled once it stops making progress), and the guest
must keep running on the source, every CPU still ticking and making progress,
with its timebase intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.checks.generic import equal
from harness.checks.result import CheckResult, Limits
from harness.errors import MigrationFailed, MigrationTimeout
from harness.scenarios.declare import Scenario, single
from harness.scenarios.steps import CarriedOn, boot, carried_on, start_pair

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext
    from harness.scenarios.declare import Variant

BANDWIDTH = 8 << 20  # bytes/s: a 512 MB guest's ~50 MB stream takes ~6 s
CUT_AFTER = 8 << 20  # bytes sent before the link goes down
STALL_S = 15.0  # how long a stalled migration may hang before it is cancelled


@dataclass(frozen=True)
class LinkLossObservations:
    migration_outcome: str
    source_status: str
    destination_running: bool
    source: CarriedOn

    def checks(self, limits: Limits) -> list[CheckResult]:
        return [
            CheckResult("migration did not complete over a dead link",
                        not self.migration_outcome.startswith("completed"), "failed or cancelled",
                        self.migration_outcome, "QEMU's migration status after the cut"),
            equal("source runs the guest again", "running", self.source_status,
                  "query-status on source after the failed migration"),
            CheckResult("destination is not running", not self.destination_running, False,
                        self.destination_running, "query-status on destination"),
            *self.source.checks(),
        ]


def run(ctx: ScenarioContext, variant: Variant[None]) -> LinkLossObservations:
    src, dst = start_pair(ctx)
    before = boot(ctx, src)
    src.monitor.cmd("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH})
    try:
        ctx.migrate(src, dst, timeout=STALL_S, cut_after_bytes=CUT_AFTER)
        outcome = "completed"
    except (MigrationFailed, MigrationTimeout) as exc:
        outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    source = carried_on(ctx, src, before)
    return LinkLossObservations(
        migration_outcome=outcome,
        source_status=src.monitor.cmd("query-status")["status"],
        destination_running=dst.alive() and dst.monitor.cmd("query-status")["status"] == "running",
        source=source,
    )


SCENARIO = Scenario(
    name="linkloss",
    description="the link dies mid-migration; the source must carry on",
    run=run,
    variants=single(),
)
