"""hotplug: a CPU core or DIMM plugged (or a core unplugged) just before a migration, and
device_add refused during one.

Guards against losing the spapr hotplug state of a guest that is still
handling a hotplug when the migration stops it: the pending hotplug event
and its interrupt, the DRC's state (vmstate ``spapr_drc``, sent only while
the DRC is not in its ready state; the configure-connector position is not
migrated at all, see :mod:`harness.stream.drc`), and a CPU the guest is
still bringing up. A destination that
gets it wrong leaves a CPU or LMB that never comes online, a hung
configure-connector loop or an unplug that never finishes.

Variants: ``cpu-0ms``, ``cpu-50ms``, ``cpu-300ms`` (live migration that
long after ``device_add`` returned; the downtime-limit is raised so that QEMU
stops the source at its first convergence check), ``cpu-stopped-0ms`` and
``cpu-stopped-2ms``, ``cpu-stopped-20ms`` (the source stopped that long after ``device_add`` and
migrated paused, then resumed on the destination: the stop lands within
milliseconds of the plug), ``cpu-settled`` (once the new CPU ticks),
``cpu-unplug-0ms`` (``device_del`` of a settled core, then migrate),
``memory-0ms`` and ``memory-settled`` (a 256 MiB DIMM; the guest kernel
onlines its LMB itself) and ``refused`` (``device_add`` during the
migration must be refused, the migration complete, the guest unchanged).
The guest starts with one CPU (maxcpus 2): the plugged CPU is then the only
secondary one, and its outcome (online, ticking) is the scenario's finding;
with two, every Debian destination's lost secondary CPU (known failures) would
come on top, and on 10.0 the guest goes silent, leaving the plug unmeasured.

The source is plugged the way its driver plugs (QMP ``object-add`` and
``device_add``, or libvirt's ``virDomainAttachDeviceFlags``, see
:meth:`harness.qemu.process.Side.plug_dimm`). The destination gets
the device as libvirt gives it: a DIMM on its command line (under the
libvirt driver, libvirt puts it there from the definition it migrates); a
core by ``device_add`` after it started with ``-incoming defer`` and before
the stream comes (libvirt's qemuProcessSetupHotpluggableVcpus), as
only the destination knows its core type (QEMU 10.0's POWER9 core is
power9_v2.2, 7.2's power9_v2.0); QEMU treats it as cold-plugged
(``spapr_drc_hotplugged`` is false while INMIGRATE). Which phase a cell
caught is in its evidence: the DRC trace events of both QEMUs, the DRCs in
the stream, and the console the new CPU was announced on. PCI hotplug is its
own scenario (pcihotplug.py): the guest's part of it is done in user space.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from harness.checks.generic import Observations, TickGap, generic_checks, ipis_delivered, missed_tick
from harness.checks.result import CheckResult, Limits, check_id, not_measured
from harness.errors import GuestUnresponsive
from harness.guest.agent import Agent
from harness.guest.protocol import CpuOnline, Probe, Tick, parse_cpu_list
from harness.qemu.machine import Dimm
from harness.scenarios.declare import MachineChange, Scenario, Variant
from harness.scenarios.steps import (
    STALLED_ANSWER_S,
    Asker,
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
    from harness.runner.context import ScenarioContext
    from harness.runner.side import Side

CORE_ID = "hotplug-core"
"""The QOM id of the plugged core, on both sides."""
DIMM_MB = 256
DIMM = Dimm("hotplug-dimm", "hotplug-mem", DIMM_MB)
"""The plugged DIMM (one 256 MiB LMB) and its memory backend, on both sides."""
MAXMEM_MB = 1024
"""The guest's RAM plus room for the DIMM (spapr wants maxmem a multiple of the 256 MiB LMB)."""
ONLINE_S = 20.0
"""How long the guest may take to bring a plugged CPU online and tick on it (or to finish an
unplug); long enough for the guest kernel's watchdog to name a CPU that locked up meanwhile."""
KERNEL_WORDS = ("watchdog:", "Oops:")
"""Guest kernel console lines kept as a cell's evidence (a CPU locked up, a kernel exception)."""
SWITCHOVER_MS = 60000
"""downtime-limit for the racing migrations: any remaining RAM fits, so QEMU stops the source at
its first convergence check (about 100 ms after ``migrate``) instead of after its iterations."""
REFUSED_BANDWIDTH = 16 << 20
"""Bytes/s for the ``refused`` migration, so that it is still active when device_add comes."""
TRACED = ("spapr_drc_set_*", "spapr_drc_attach*", "spapr_drc_unplug_request*", "spapr_drc_awaiting_quiesce*",
          "spapr_rtas_ibm_configure_connector_invalid*")
"""QEMU trace events (hw/ppc/trace-events) for the guest's side of a hotplug, on both QEMUs; as
patterns, which QEMU accepts when a build lacks the event (5.2 has no spapr_drc_unplug_request)."""

Action = Literal["plug", "unplug", "refused", "memory"]


@dataclass(frozen=True)
class Plan:
    action: Action
    delay_ms: int | None
    """From ``device_add``/``device_del`` to ``migrate`` (or ``stop``); None: once the plugged CPU
    ticks, or the plugged memory is online, on the source."""
    stopped: bool = False
    """Stop the source after the delay and migrate it paused (a non-live migration, as
    ``virsh migrate`` without --live): the stop lands within milliseconds of device_add, inside the
    guest's handling of the hotplug; the destination is resumed after the load."""
    destination_core: bool = True
    """Whether the destination is given the core (False only to show the cell then fails); a DIMM
    is on the destination's command line (the variant's destination change)."""


@dataclass(frozen=True)
class HotplugObservations:
    plan: Plan
    before: Before
    new_cpu: int | None
    """The guest's number for the plugged CPU, None when it never announced one."""
    announced_on: str
    """``source``, ``destination`` or ``nowhere``: which console the new CPU's ``cpu`` line came on."""
    ticked_on_source: bool
    """The new CPU ticked on the source before the stop (then 'ticks on schedule' covers it)."""
    new_cpu_ticked: bool
    """A tick of the new CPU on the destination."""
    core_src: bool
    core_dst: bool
    """QEMU's view after the migration: the plugged core or DIMM present on each side
    (query-hotpluggable-cpus, query-memory-devices)."""
    mem_after_kb: int | None
    """``memory``: the guest's MemTotal on the destination once it grew (or at the deadline)."""
    deleted_on: tuple[str, ...]
    """Sides that emitted DEVICE_DELETED for the core."""
    refusal: str | None
    """``refused``: QEMU's error for device_add mid-migration, or ``accepted``."""
    migrate_after_ms: int | None
    """From device_add/device_del returning to the migrate (or stop) command being issued."""
    drcs: tuple[Drc, ...]
    probe_after: Probe | None
    kernel_said: str
    """The destination guest kernel's watchdog and oops lines (a hard lockup of the plugged CPU)."""
    agent_cpus: tuple[int, ...]
    """Every CPU the agent announced, on either console (an unplugged CPU's threads stay)."""
    gaps: tuple[TickGap, ...]
    downtime_ms: int
    seen: Observations

    def expected_online(self) -> tuple[int, ...]:
        plugged = self.plan.action == "plug" and self.new_cpu is not None
        return tuple(sorted({*self.before.cpus, *((self.new_cpu,) if plugged else ())}))

    def checks(self, limits: Limits) -> list[CheckResult]:
        own = {"plug": self._plug_checks, "unplug": self._unplug_checks, "memory": self._memory_checks,
               "refused": self._refused_checks}[self.plan.action]()
        without = {"online CPUs", "IPIs delivered between every pair of CPUs"}
        if self.plan.action == "unplug":
            without.add("agent threads run on their CPUs")  # the removed CPU's threads moved
        return [*own, self._ipis(), *generic_checks(self.seen, limits, without=without)]

    def _online(self) -> CheckResult:
        name = "online CPUs after the " + ("unplug" if self.plan.action == "unplug" else "plug")
        want = ",".join(map(str, self.expected_online()))
        if self.plan.action == "plug" and self.new_cpu is None:
            return not_measured(name, "the plugged CPU never came online, so which CPUs should be "
                                "online is not known", bound=f"{want} and the plugged CPU",
                                cause=check_id("plugged CPU comes online"))
        if self.probe_after is None:
            return self.seen.unanswered(name, "probe", want)
        after = self.probe_after.cpus_online
        return CheckResult(
            name,
            parse_cpu_list(after) == self.expected_online(),
            want, after, f"/sys/devices/system/cpu/online on the destination; before: "
            f"{self.before.probe.cpus_online}; new CPU announced on the {self.announced_on}")

    def _plug_checks(self) -> list[CheckResult]:
        checks = [
            CheckResult("plugged core present on both sides", self.core_src and self.core_dst,
                        "source and destination", _sides(self.core_src, self.core_dst),
                        "query-hotpluggable-cpus after the migration (qom-path of the plugged core-id)"),
            CheckResult("plugged CPU comes online", self.new_cpu is not None, "a cpu line",
                        f"CPU {self.new_cpu} on the {self.announced_on}" if self.new_cpu is not None
                        else f"no new CPU within {ONLINE_S:.0f} s",
                        f"the agent's cpu announcements; migration started {self.migrate_after_ms} ms "
                        f"after device_add; DRCs in the stream: {_drcs(self.drcs)}; guest kernel on "
                        f"the destination: {self.kernel_said or 'nothing'}; CPUs present and online in the "
                        f"guest after: {_present_online(self.probe_after)}; "
                        f"CPUs that missed their tick after the migration: {missed_tick(self.gaps)}"),
            self._online(),
        ]
        if self.ticked_on_source:  # one ticking on the source is in 'ticks on schedule'
            return checks
        name = "plugged CPU ticks on the destination"
        if self.new_cpu is None:
            checks.append(not_measured(name, "the plugged CPU never came online",
                                       cause=check_id("plugged CPU comes online")))
        else:
            checks.append(CheckResult(
                name, self.new_cpu_ticked, "a tick", "ticked" if self.new_cpu_ticked else "no tick",
                f"first tick of the CPU brought online on the destination; guest kernel there: "
                f"{self.kernel_said or 'nothing'}; CPUs that missed their tick after the migration: "
                f"{missed_tick(self.gaps)}"))
        return checks

    def _unplug_checks(self) -> list[CheckResult]:
        return [
            CheckResult("unplug completes on the destination", "destination" in self.deleted_on
                        and not self.core_dst, "DEVICE_DELETED on the destination, core gone",
                        f"DEVICE_DELETED on: {', '.join(self.deleted_on) or 'neither side'}; core "
                        f"{'still' if self.core_dst else 'not'} populated on the destination",
                        f"QMP events and query-hotpluggable-cpus; migration started "
                        f"{self.migrate_after_ms} ms after device_del; DRCs in the stream: "
                        f"{_drcs(self.drcs)}; guest kernel on the destination: "
                        f"{self.kernel_said or 'nothing'}"),
            self._online(),
        ]

    def _memory_checks(self) -> list[CheckResult]:
        before = self.before.probe.mem_total_kb
        grown = None if self.mem_after_kb is None else self.mem_after_kb - before
        return [
            CheckResult("plugged DIMM present on both sides", self.core_src and self.core_dst,
                        "source and destination", _sides(self.core_src, self.core_dst),
                        "query-memory-devices after the migration (libvirt: a source it ended is "
                        "read in the definition it migrated)"),
            CheckResult("plugged memory online in the guest", grown == DIMM_MB * 1024,
                        f"MemTotal + {DIMM_MB * 1024} kB", "no answer to the probe" if grown is None
                        else f"MemTotal + {grown} kB ({before} to {self.mem_after_kb} kB)",
                        f"/proc/meminfo on the destination (the kernel onlines the DIMM's LMBs itself); "
                        f"migration started {self.migrate_after_ms} ms after device_add; DRCs in the "
                        f"stream: {_drcs(self.drcs)}"),
            self._online(),
        ]

    def _refused_checks(self) -> list[CheckResult]:
        return [
            CheckResult("device_add refused during migration", self.refusal is not None
                        and self.refusal != "accepted" and "migrat" in self.refusal,
                        "an error naming the migration", self.refusal or "device_add never sent",
                        "QMP device_add on the source while query-migrate said active"),
            CheckResult("no core plugged on either side", not self.core_src and not self.core_dst,
                        "neither", _sides(self.core_src, self.core_dst),
                        "query-hotpluggable-cpus after the migration"),
            self._online(),
        ]

    def _ipis(self) -> CheckResult:
        """Between the agent's CPUs, a plugged or unplugged one included."""
        return ipis_delivered(self.seen, len(self.agent_cpus))


def _present_online(probe: Probe | None) -> str:
    return f"{probe.cpus_present} and {probe.cpus_online}" if probe else "no answer"


def _sides(src: bool, dst: bool) -> str:
    return " and ".join(n for n, on in (("source", src), ("destination", dst)) if on) or "neither"


def _drcs(drcs: tuple[Drc, ...]) -> str:
    return ", ".join(f"0x{d.index:08x} {DRC_STATES.get(d.state, d.state)}"
                     + (" unplug requested" if d.unplug_requested else "") for d in drcs) or "none"


def run(ctx: ScenarioContext, variant: Variant[Plan]) -> HotplugObservations:
    plan = variant.data
    src = ctx.start("src")
    src.trace(TRACED)  # which side the guest's set-indicator and configure-connector reached
    ctx.cont(src)  # the guest boots while the destination starts
    dst = ctx.start("dst")
    dst.trace(TRACED)
    before = boot(ctx, src)
    source = Agent(src.console)
    slot = _free_core(src)
    core_id = slot["props"]["core-id"]
    if plan.action == "unplug":
        _plug(src, slot)
        _settle(ctx, src, before)
    if plan.destination_core and plan.action in ("plug", "unplug"):
        _plug(dst, _slot(dst, core_id))  # before the stream comes, as libvirt does
    refusal: list[str] = []
    migrate_after = None
    if plan.action == "refused":
        src.monitor.cmd("migrate-set-parameters", **{"max-bandwidth": REFUSED_BANDWIDTH})
        result = ctx.migrate(src, dst,
                             while_active=lambda: refusal.append(device_add_refusal(src, **_core(slot))))
    else:
        # Switch over at the first chance (QEMU checks after 100 ms), so the delay places the stop.
        src.monitor.cmd("migrate-set-parameters", **{"downtime-limit": SWITCHOVER_MS})
        if plan.action == "plug":
            _plug(src, slot)
        elif plan.action == "memory":
            src.plug_dimm(DIMM)  # each driver its own way: QMP, or libvirt's attachDeviceFlags
        else:
            src.monitor.cmd("device_del", id=CORE_ID)
        done = time.monotonic()
        if plan.delay_ms is None and plan.action == "memory":
            _memory_grown(source, before, ONLINE_S)
        elif plan.delay_ms is None:
            _settle(ctx, src, before)
        else:
            time.sleep(plan.delay_ms / 1000)
        if plan.stopped:
            src.monitor.cmd("stop")
        migrate_after = round((time.monotonic() - done) * 1000)
        result = ctx.migrate(src, dst)
        if plan.stopped:
            dst.monitor.cmd("cont")
    destination = Agent(dst.console)
    with ctx.phase("check"):
        ticked = tuple(c for c in before.cpus if source.latest(Tick, cpu=c) is not None)
        new_on_src = _new_cpus(source, before)
        if plan.action == "plug" and new_on_src:
            ticked = ticked + tuple(c for c in new_on_src if source.latest(Tick, cpu=c) is not None)
        gaps = tick_gaps(source, destination, ticked, ctx.limits, result.figures.downtime_ms,
                         watch=ctx.hop_watch(dst))
        stalled = bool(missed_tick(gaps))
        new_cpu, announced_on, new_ticked, ticked_on_src = None, "nowhere", False, False
        if stalled and plan.action in ("plug", "unplug", "memory"):
            # a CPU missed its tick: wake the guest (console input is an interrupt) so that it can
            # act on the plug at all; said in the observations (``woken``)
            Asker(Agent(dst.console, timeout=STALLED_ANSWER_S))(Agent.probe)
        if plan.action == "plug":
            deadline = time.monotonic() + ONLINE_S  # for the announcement and the first tick
            new_cpu, announced_on = _announced(source, destination, before)
            ticked_on_src = any(g.cpu == new_cpu for g in gaps)
            if ticked_on_src:  # its gap says whether it ticks here
                new_ticked = any(g.cpu == new_cpu and g.first_after is not None for g in gaps)
            elif new_cpu is not None:
                new_ticked = destination.console.wait_for(
                    Tick, lambda t: t.cpu == new_cpu, max(0.0, deadline - time.monotonic())) is not None
        deleted = (_deleted(src, "source") + _wait_deleted(dst)) if plan.action == "unplug" else ()
        mem_after = None
        if plan.action == "memory":
            core_src, core_dst = src.has_dimm(DIMM), dst.has_dimm(DIMM)
            grown = _memory_grown(destination, before, 0.0 if stalled else ONLINE_S)
            mem_after = grown.mem_total_kb if grown else None
        else:
            core_src, core_dst = _populated(src, core_id), _populated(dst, core_id)
        drcs = drcs_in(result.stream) if result.stream is not None else ()
        # A CPU stuck in a plug or unplug can hold the guest's console input path: a short probe.
        stuck = stalled or (plan.action == "plug" and not new_ticked) or (
            plan.action == "unplug" and "destination" not in deleted)
        probed, silence = probe_after(dst, stuck)
    cpus = tuple(sorted({*before.cpus, *((new_cpu,) if new_cpu is not None and new_ticked else ())}))
    seen = observe(ctx, src, dst, Before(before.probe, before.load, cpus),
                   [Hop(result.figures, gaps, result.stream)], silence=silence)
    return HotplugObservations(
        plan, before, new_cpu, announced_on, ticked_on_src, new_ticked, core_src, core_dst, mem_after,
        deleted,
        refusal[0] if refusal else None, migrate_after, drcs, probed, _kernel_said(dst),
        tuple(sorted({*source.online_cpus(), *destination.online_cpus()})), gaps,
        result.figures.downtime_ms, seen)


def _free_core(side: Side) -> dict[str, Any]:
    """A core slot ``side`` can plug (query-hotpluggable-cpus: no qom-path yet)."""
    free = [c for c in side.monitor.cmd("query-hotpluggable-cpus") if "qom-path" not in c]
    if not free:
        raise AssertionError(f"{side.role}: no free core slot; the variant must set maxcpus > smp")
    return dict(free[-1])


def _slot(side: Side, core_id: int) -> dict[str, Any]:
    """``side``'s own slot for ``core_id``: its core type is its own (its -cpu alias)."""
    return next(dict(c) for c in side.monitor.cmd("query-hotpluggable-cpus")
                if c["props"].get("core-id") == core_id)


def _core(slot: dict[str, Any]) -> dict[str, Any]:
    """device_add's arguments for the plugged core in ``slot``."""
    return {"driver": slot["type"], "id": CORE_ID, **slot["props"]}


def _plug(side: Side, slot: dict[str, Any]) -> None:
    side.monitor.cmd("device_add", **_core(slot))


def _memory_grown(agent: Agent, before: Before, timeout: float) -> Probe | None:
    """The first probe whose MemTotal grew by the DIMM (the guest onlined it), else the last one
    taken when ``timeout`` ran out; None if the guest did not answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe = agent.probe()
        except GuestUnresponsive:
            return None
        if probe.mem_total_kb - before.probe.mem_total_kb >= DIMM_MB * 1024 or time.monotonic() > deadline:
            return probe
        time.sleep(0.5)


def _populated(side: Side, core_id: int) -> bool:
    return any(c["props"].get("core-id") == core_id and "qom-path" in c
               for c in side.monitor.cmd("query-hotpluggable-cpus"))


def _settle(ctx: ScenarioContext, src: Side, before: Before) -> None:
    """Until the plugged CPU is announced on the source and ticks there."""
    agent = Agent(src.console)
    announced = agent.console.wait_for(CpuOnline, lambda m: m.cpu not in before.cpus, ONLINE_S)
    if announced is None:
        raise GuestUnresponsive(f"source: no plugged CPU came online within {ONLINE_S:.0f} s; guest "
                                f"kernel there: {_kernel_said(src) or 'nothing'}")
    agent.beat_after(Tick, 0, ctx.timeouts.beat_s, cpu=announced.cpu)


def _new_cpus(agent: Agent, before: Before) -> tuple[int, ...]:
    return tuple(c for c in agent.online_cpus() if c not in before.cpus)


def _announced(source: Agent, destination: Agent, before: Before) -> tuple[int | None, str]:
    """The plugged CPU's number and the console it was announced on (the source's, when its line
    was cut by the stop and completed on the destination's console, too)."""
    def new(m: CpuOnline) -> bool:
        return m.cpu not in before.cpus
    message = destination.console.wait_for_either(source.console, CpuOnline, new, ONLINE_S)
    if message is None:
        return None, "nowhere"
    return message.cpu, "source" if message in source.console.messages() else "destination"


def _deleted(side: Side, name: str) -> tuple[str, ...]:
    events = side.monitor.events()
    gone = any(e["event"] == "DEVICE_DELETED" and e["data"].get("device") == CORE_ID for e in events)
    return (name,) if gone else ()


def _wait_deleted(dst: Side) -> tuple[str, ...]:
    event = dst.monitor.wait_event(
        lambda e: e["event"] == "DEVICE_DELETED" and e["data"].get("device") == CORE_ID, ONLINE_S)
    return ("destination",) if event else ()


def _kernel_said(side: Side) -> str:
    """The guest kernel's watchdog and oops lines on ``side``'s console (QEMU's log of it)."""
    log = side.paths.serial_log
    text = log.read_text(errors="replace") if log.exists() else ""
    return "; ".join(line.split("] ", 1)[-1].strip() for line in text.splitlines()
                     if any(word in line for word in KERNEL_WORDS))


def _variant(name: str, plan: Plan, description: str) -> Variant[Plan]:
    return Variant(name, plan, source=MachineChange(smp=1, maxcpus=2), description=description)


def _memory(name: str, delay_ms: int | None, description: str) -> Variant[Plan]:
    """The source has room for one DIMM; the destination starts with it (on its command line, or
    in the definition libvirt migrates)."""
    room = MachineChange(smp=1, maxcpus=2, maxmem_mb=MAXMEM_MB, memory_slots=1)
    return Variant(name, Plan("memory", delay_ms), source=room, description=description,
                   destination=dataclasses.replace(room, dimms=(DIMM,)))


SCENARIO = Scenario(
    name="hotplug",
    description="a CPU core plugged or unplugged just before the migration; the guest finishes on "
                "the destination",
    run=run,
    variants=(
        _variant("cpu-0ms", Plan("plug", 0), "migrate as soon as device_add returns"),
        _variant("cpu-50ms", Plan("plug", 50), "migrate 50 ms after device_add"),
        _variant("cpu-300ms", Plan("plug", 300), "migrate 300 ms after device_add"),
        _variant("cpu-settled", Plan("plug", None), "migrate once the plugged CPU ticks"),
        _variant("cpu-stopped-0ms", Plan("plug", 0, stopped=True),
                 "stop the source as soon as device_add returns, migrate it paused, resume there"),
        _variant("cpu-stopped-2ms", Plan("plug", 2, stopped=True),
                 "stop the source 2 ms after device_add (about 3 ms after: mostly inside the guest's "
                 "configure-connector walk), migrate it paused, resume there"),
        _variant("cpu-stopped-20ms", Plan("plug", 20, stopped=True),
                 "stop the source 20 ms after device_add, migrate it paused, resume there"),
        _variant("cpu-unplug-0ms", Plan("unplug", 0), "device_del of a settled core, migrate at once"),
        _variant("refused", Plan("refused", None), "device_add while the migration is active"),
        _memory("memory-0ms", 0, "a 256 MiB DIMM; migrate as soon as device_add returns"),
        _memory("memory-settled", None, "a 256 MiB DIMM; migrate once the guest has it online"),
    ),
)
