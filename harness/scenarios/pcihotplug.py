"""pcihotplug: a virtio device plugged into or unplugged from a PHB just before a migration, and
device_add of one refused during a migration.

Guards against losing a PCI hotplug the guest is still handling when the
migration stops it: the pending hotplug event and its interrupt, the PCI
DRC's state (vmstate ``spapr_drc``, sent while the DRC is not in its ready
state ``physical configured`` or an unplug was requested), and the device's
own state. A destination that gets it wrong leaves a device the guest never
configures, one that does not work, or an unplug that never completes.

The guest does a distribution's part of PCI hotplug (the kernel leaves it to
``rtas_errd`` and ``drmgr``): the agent reads the RTAS event log and
acquires, configures and enables the slot, or disables, removes and
isolates it, with the same RTAS calls and kernel interfaces, and reports
each as a ``dlpar`` line (guests/golden/PROTOCOL.md, "PCI hotplug").

Variants, on the default PHB (``phb0-``) and on a second one (``phb1-``):
``plug-0ms``, ``plug-50ms``, ``plug-300ms`` (a virtio-rng plugged, the
source stopped that long after ``device_add`` returned, migrated paused and
resumed on the destination: a live migration stops the source 100 ms or
more after ``migrate``, by when the guest has handled the plug, so only a
stop catches it before or during that), ``plug-settled`` (once the guest
configured it), the same four for ``unplug`` of a virtio-rng the source
started with (``device_del``), and ``refused`` (``device_add`` during a
live migration must be refused).

The destination is given the device as libvirt gives it: on its command
line, here by ``device_add`` before the stream comes (QEMU treats it as
cold-plugged while it waits for the stream), when the source still has it
at the stop (an unplug QEMU completed before is not migrated). One vCPU,
for the reason phb gives.

Own checks, before the generic ones: QEMU's device on both sides (gone
from the destination after an unplug; on neither after the refusal); the guest's ``dlpar`` handling,
on whichever side it ran; the device in (or gone from) the guest's PCI
list on the destination; the DRC in the stream agreeing with how far the
guest had got at the stop (the guest's timebase at the stop against the
``dlpar`` line's timebase readings). The generic checks include device
traffic: every virtio-rng the guest has then, the plugged one included,
read on the destination with its interrupts delivered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from harness.checks.generic import STALL, Observations, TickGap, generic_checks, missed_tick
from harness.checks.migrated_timebase import migrated_timebase
from harness.checks.result import CheckResult, Limits, check_id, not_measured
from harness.guest.agent import Agent
from harness.guest.protocol import Dlpar, Probe
from harness.scenarios.declare import MachineChange, Scenario, Variant
from harness.scenarios.hotplug import TRACED
from harness.scenarios.steps import (
    STALLED_ANSWER_S,
    Before,
    Hop,
    boot,
    device_add_refusal,
    observe,
    probe_after,
    tick_gaps,
)
from harness.stream.drc import DRC_STATES, Drc, drcs_in

if TYPE_CHECKING:
    from harness.migration.run import MigrationResult
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side

DEVICE_ID = "hotplug-rng"
"""The QOM id of the plugged or unplugged device, on both sides."""
SLOT = 3
"""Its PCI slot on its PHB (the matrix's own device takes slot 0)."""
PHB1 = "spapr-pci-host-bridge,index=1,id=phb1"
"""The second PHB, on both sides of the ``phb1-`` variants."""
DRC_PCI = 0x40000000
"""spapr's PCI DRC index: this | PHB index << 16 | devfn (hw/ppc/spapr_pci.c ``drc_id``)."""
PHYSICAL_POWERON, PHYSICAL_CONFIGURED = 6, 8
"""A hotplugged device's DRC before the guest unisolates it, and the ready state."""
HANDLED_S = 20.0
"""How long the guest may take to handle the hotplug event (read, configure, enable)."""
REFUSED_BANDWIDTH = 16 << 20
"""Bytes/s for the ``refused`` migration, so that it is still active when device_add comes."""

Action = Literal["plug", "unplug", "refused"]


@dataclass(frozen=True)
class Plan:
    action: Action
    phb: int
    delay_ms: int | None
    """From ``device_add``/``device_del`` to the stop; None: once the guest handled it."""
    destination_device: bool = True
    """Whether the destination of a plug is given the device (False only to show the cell then
    fails)."""

    @property
    def bus(self) -> str:
        return "pci.0" if self.phb == 0 else f"phb{self.phb}.0"

    @property
    def pci(self) -> str:
        """The device's address in the guest (Linux numbers the domain by the PHB index)."""
        return f"{self.phb:04x}:00:{SLOT:02x}.0"

    @property
    def drc(self) -> int:
        return DRC_PCI | self.phb << 16 | SLOT << 3

    def device(self) -> dict[str, Any]:
        return {"driver": "virtio-rng-pci", "id": DEVICE_ID, "bus": self.bus, "addr": hex(SLOT)}

    def device_arg(self) -> str:
        """The device as a ``-device`` argument (the source of an unplug starts with it)."""
        return ",".join(f"{k}={v}" for k, v in self.device().items()).removeprefix("driver=")


@dataclass(frozen=True)
class PciHotplugObservations:
    plan: Plan
    before: Before
    on_src: bool
    on_dst: bool
    """QEMU's view after the migration: the device (its id) in query-pci on each side."""
    given_to_destination: bool
    handled: tuple[tuple[str, Dlpar], ...]
    """The guest's ``dlpar`` lines for the device's DRC, with the console each came on."""
    deleted_on: tuple[str, ...]
    refusal: str | None
    migrate_after_ms: int | None
    drcs: tuple[Drc, ...]
    stop_tb: int | None
    """The guest's timebase when the source stopped: under TCG the stopped source's TB in the
    hop's machine state (``info registers``: TCG's timebase follows the virtual clock, which stops
    with the VM), under KVM the stream's ``guest_timebase`` (KVM's TB is not in ``info registers``)."""
    probe_after: Probe | None
    gaps: tuple[TickGap, ...]
    seen: Observations

    def checks(self, limits: Limits) -> list[CheckResult]:
        own = self._refused_checks() if self.plan.action == "refused" else [
            self._qemu_check(), self._handled_check(), self._guest_check(), self._drc_check()]
        return [*own, *generic_checks(self.seen, limits, without={"PCI devices and BARs"})]

    def _qemu_check(self) -> CheckResult:
        evidence = (f"query-pci after the migration (device id {DEVICE_ID}); DEVICE_DELETED on: "
                    f"{', '.join(self.deleted_on) or 'neither side'}; the destination was "
                    f"{'' if self.given_to_destination else 'not '}given the device")
        if self.plan.action == "plug":
            return CheckResult("plugged device present on both sides", self.on_src and self.on_dst,
                               "source and destination", _sides(self.on_src, self.on_dst), evidence)
        # an unplug the guest finished on the destination stays pending on the stopped source
        return CheckResult("unplug completes on the destination", not self.on_dst,
                           "device gone from the destination", f"present on: "
                           f"{_sides(self.on_src, self.on_dst)}", evidence)

    def _handled_check(self) -> CheckResult:
        name = f"guest handled the {self.plan.action} event"
        if not self.handled and missed_tick(self.gaps):
            return not_measured(name, f"no dlpar line within {STALLED_ANSWER_S:.0f} s of the "
                                f"destination resuming, and CPUs {missed_tick(self.gaps)} missed their "
                                "tick: the guest's handling sleeps on its timers", cause=STALL)
        done = [f"{side}: {d.action} {'ok' if d.ok else f'failed at {d.failed} ({d.why})'}"
                for side, d in self.handled]
        ok = any(d.ok and d.action == ("add" if self.plan.action == "plug" else "remove")
                 for _, d in self.handled) and all(d.ok for _, d in self.handled)
        return CheckResult(name, ok, "one dlpar line, every step ok", "; ".join(done) or
                           f"no dlpar line within {HANDLED_S:.0f} s",
                           f"the agent's dlpar lines for DRC {self.plan.drc:#x} on both consoles; "
                           f"migration started {self.migrate_after_ms} ms after the request; CPUs "
                           f"that missed their tick: {missed_tick(self.gaps) or 'none'}")

    def _guest_check(self) -> CheckResult:
        plug = self.plan.action == "plug"
        name = f"guest {'sees' if plug else 'no longer sees'} the device on the destination"
        if self.probe_after is None:
            return self.seen.unanswered(name, "probe", self.plan.pci)
        present = self.plan.pci in {d.addr for d in self.probe_after.pci}
        return CheckResult(name, present == plug, f"{self.plan.pci} {'listed' if plug else 'absent'}",
                           ", ".join(d.addr for d in self.probe_after.pci) or "no PCI device",
                           "/sys/bus/pci/devices on the destination")

    def _drc_check(self) -> CheckResult:
        """The DRC the stream carried against the guest's progress at the stop."""
        name = "DRC in the stream agrees with the guest's progress"
        if self.stop_tb is None:
            return not_measured(name, "the guest's timebase at the stop was not read (under TCG it "
                                "is the source's TB in the hop's machine state, under KVM the "
                                "stream's guest_timebase: not read, or stream not recorded)")
        want_action = "add" if self.plan.action == "plug" else "remove"
        line = next((d for _, d in self.handled if d.action == want_action), None)
        drc = next((d for d in self.drcs if d.index == self.plan.drc), None)
        carried = "not sent (ready)" if drc is None else (
            f"{DRC_STATES.get(drc.state, drc.state)}"
            + (", unplug requested" if drc.unplug_requested else ""))
        if line is None:
            return not_measured(name, f"the guest reported no {want_action}, so how far it had got "
                                f"at the stop is not known (the stream carried: {carried})",
                                cause=check_id(f"guest handled the {self.plan.action} event"))
        if line.tb_done <= self.stop_tb:
            progress, ok = "done on the source", drc is None
            want = ("not sent: the DRC ready" if self.plan.action == "plug"
                    else "not sent: the device released")
        elif line.tb_event > self.stop_tb:
            progress = "not begun at the stop"
            if self.plan.action == "plug":
                ok, want = drc is not None and drc.state == PHYSICAL_POWERON, "physical poweron (not ready)"
            else:
                ok, want = drc is not None and drc.unplug_requested, "unplug requested"
        else:
            progress, ok, want = "in progress at the stop", True, "any state on the way"
        timing = f"event read at tb {line.tb_event}, done at tb {line.tb_done}"
        return CheckResult(name, ok, want, carried,
                           f"spapr_drc {self.plan.drc:#x} in the recorded stream; the guest's "
                           f"handling {progress} (timebase at the stop {self.stop_tb}; {timing})")

    def _refused_checks(self) -> list[CheckResult]:
        return [
            CheckResult("device_add refused during migration", self.refusal is not None
                        and self.refusal != "accepted" and "migrat" in self.refusal,
                        "an error naming the migration", self.refusal or "device_add never sent",
                        "QMP device_add of a virtio-rng-pci on the source while query-migrate said active"),
            CheckResult("no device plugged on either side", not self.on_src and not self.on_dst,
                        "neither", _sides(self.on_src, self.on_dst), "query-pci after the migration"),
            CheckResult("guest saw no hotplug event", not self.handled, "no dlpar line",
                        "; ".join(f"{side}: {d.action}" for side, d in self.handled) or "none",
                        "the agent's dlpar lines on both consoles"),
        ]


def _sides(src: bool, dst: bool) -> str:
    return " and ".join(n for n, on in (("source", src), ("destination", dst)) if on) or "neither"


def run(ctx: ScenarioContext, variant: Variant[Plan]) -> PciHotplugObservations:
    plan = variant.data
    src = ctx.start("src")
    src.trace(TRACED)  # which side the guest's set-indicator and configure-connector reached
    ctx.cont(src)  # the guest boots while the destination starts
    dst = ctx.start("dst")
    dst.trace(TRACED)
    before = boot(ctx, src, devices=True)
    source = Agent(src.console)
    refusal: list[str] = []
    migrate_after = None
    given = False
    if plan.action == "refused":
        src.monitor.cmd("migrate-set-parameters", **{"max-bandwidth": REFUSED_BANDWIDTH})
        result = ctx.migrate(src, dst,
                             while_active=lambda: refusal.append(device_add_refusal(src, **plan.device())))
    else:
        if plan.action == "plug":
            if plan.destination_device:  # before the stream comes, as libvirt does
                dst.monitor.cmd("device_add", **plan.device())
                given = True
            src.monitor.cmd("device_add", **plan.device())
        else:
            src.monitor.cmd("device_del", id=DEVICE_ID)
        requested = time.monotonic()
        if plan.delay_ms is None:
            _handled(src, plan, HANDLED_S)
            if plan.action == "unplug":
                src.monitor.wait_event(_deleted, HANDLED_S)
        else:
            time.sleep(plan.delay_ms / 1000)
        # Stopped here, not by the migration: the stop lands at the delay (a live migration stops
        # the source 100 ms or more later, by when the guest has handled a plug), and the
        # destination is given the device exactly when the source still has it (QEMU may release
        # an unplugged one at any moment).
        src.monitor.cmd("stop")
        migrate_after = round((time.monotonic() - requested) * 1000)
        if plan.action == "unplug" and _present(src):
            dst.monitor.cmd("device_add", **plan.device())
            given = True
        result = ctx.migrate(src, dst)  # which joins a dlpar line the stop cut in two
        dst.monitor.cmd("cont")
    destination = Agent(dst.console)
    with ctx.phase("check"):
        gaps = tick_gaps(source, destination, before.cpus, ctx.limits, result.figures.downtime_ms,
                         watch=ctx.hop_watch(dst))
        if plan.action != "refused":  # a guest without timer interrupts sleeps for good: not long
            _handled(dst, plan, STALLED_ANSWER_S if missed_tick(gaps) else HANDLED_S, source=src)
        deleted = tuple(name for name, side in (("source", src), ("destination", dst))
                        if any(_deleted(e) for e in side.monitor.events()))
        if plan.action == "unplug" and given and "destination" not in deleted:
            deleted += ("destination",) if dst.monitor.wait_event(_deleted, HANDLED_S) else ()
        on_src, on_dst = _present(src), _present(dst)
        stream = result.stream
        drcs = drcs_in(stream) if stream is not None else ()
        stop_tb = _stop_tb(ctx, result)
        probed, silence = probe_after(dst, bool(missed_tick(gaps)))
    expected = tuple(d.pci for d in before.devices.devices if d.pci != plan.pci) if before.devices else ()
    if plan.action == "plug":
        expected += (plan.pci,)
    seen = observe(ctx, src, dst, before, [Hop(result.figures, gaps, stream)], devices=expected,
                   silence=silence)
    handled = tuple((side.role, d) for side in (src, dst) for d in _lines(side, plan))
    return PciHotplugObservations(plan, before, on_src, on_dst, given, handled, deleted,
                                  refusal[0] if refusal else None, migrate_after, drcs, stop_tb,
                                  probed, gaps, seen)


def _stop_tb(ctx: ScenarioContext, result: MigrationResult) -> int | None:
    """The guest's timebase at the stop (see :attr:`PciHotplugObservations.stop_tb`)."""
    if ctx.setup_of("dst").accel == "kvm":
        return migrated_timebase(result.stream).value
    state = result.machine_state
    cpu = next((c for c in state.source.components if c.name == "CPU 0"), None) if state else None
    tb = cpu.fields.get("TB") if cpu else None
    return int(tb) if tb is not None else None


def _lines(side: Side, plan: Plan) -> tuple[Dlpar, ...]:
    return tuple(m for m in side.console.messages() if isinstance(m, Dlpar) and m.drc == plan.drc)


def _handled(side: Side, plan: Plan, timeout: float, source: Side | None = None) -> Dlpar | None:
    """The guest's dlpar line for the plan's DRC on ``side``, or on the ``source`` it migrated
    from (handled there; its line may be completed by the destination's console after the stop)."""
    def match(m: Dlpar) -> bool:
        return m.drc == plan.drc
    if source is None:
        return side.console.wait_for(Dlpar, match, timeout)
    return side.console.wait_for_either(source.console, Dlpar, match, timeout)


def _deleted(event: dict[str, object]) -> bool:
    data = event.get("data")
    return event["event"] == "DEVICE_DELETED" and isinstance(data, dict) and data.get("device") == DEVICE_ID


def _present(side: Side) -> bool:
    """The device in ``side``'s query-pci (on any bus)."""
    def devices(buses: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        for bus in buses:
            for dev in bus.get("devices", []):
                found.append(dev)
                bridge = dev.get("pci_bridge", {}).get("bus")
                if bridge:
                    found += devices([bridge])
        return found
    return any(d.get("qdev_id") == DEVICE_ID for d in devices(side.monitor.cmd("query-pci")))


def _variant(action: Action, phb: int, delay_ms: int | None) -> Variant[Plan]:
    when = "settled" if delay_ms is None else f"{delay_ms}ms"
    plan = Plan(action, phb, delay_ms)
    bridge = (PHB1,) if phb else ()
    source = MachineChange(devices=(*bridge, plan.device_arg()) if action == "unplug" else bridge,
                           smp=1, maxcpus=1)
    request = ("device_add of a virtio-rng" if action == "plug"
               else "device_del of the virtio-rng it started with")
    timing = ("once the guest handled it" if delay_ms is None else
              f"{delay_ms} ms after the request" if delay_ms else "as soon as the request returned")
    return Variant(f"phb{phb}-{action}-{when}", plan, source=source,
                   destination=MachineChange(devices=bridge, smp=1, maxcpus=1),
                   description=f"{request} on PHB {phb}; migrate {timing}")


SCENARIO = Scenario(
    name="pcihotplug",
    description="a virtio device plugged into or unplugged from a PHB just before the migration; "
                "the guest finishes on the destination and the device works there",
    run=run,
    variants=(
        *(_variant(action, phb, delay) for phb in (0, 1) for action in ("plug", "unplug")
          for delay in (0, 50, 300, None)),
        Variant("refused", Plan("refused", 0, None), source=MachineChange(smp=1, maxcpus=1),
                description="device_add of a virtio-rng while the migration is active"),
    ),
)
