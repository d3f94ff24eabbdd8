"""One role's guest as a libvirt domain, seen by scenarios as a QEMU side.

Scenarios and steps talk to a side's console (the same unix socket as under
the direct driver) and ask its monitor to ``cont`` and ``query-status``.
Here ``cont`` is ``virDomainResume``, a downtime limit
``virDomainMigrateSetMaxDowntime``, and ``query-status`` is libvirt's own
state of the domain, named as QEMU would (:data:`STATUS`): after a completed
outgoing migration libvirt has stopped the source's QEMU, so "postmigrate"
is read as libvirt's "shut off, migrated". A DIMM is plugged with
``virDomainAttachDeviceFlags`` (:meth:`LibvirtSide.plug_dimm`); QMP that
would change devices behind libvirt's back (:data:`LIBVIRTS_OWN`) is
refused. Any other QMP command goes to QEMU through
``libvirt_qemu.qemuMonitorCommand``. QMP events are libvirt's, not ours,
under this driver.

:class:`LibvirtSide` implements :class:`harness.runner.side.Side` as
:class:`harness.qemu.process.QemuProcess` does, sharing its functions, not
its class: nothing of a process of ours is here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from harness.builds.model import Build
from harness.errors import HarnessError, QemuCrashed, QemuStartError, QmpCommandError
from harness.hosts.base import Host
from harness.hosts.workspace import Workspace
from harness.libvirt.daemon import LibvirtDaemon
from harness.libvirt.domain_xml import dimm_aliases, dimm_xml
from harness.libvirt.errors import libvirt_words
from harness.qemu.argv import SidePaths
from harness.qemu.console import Console
from harness.qemu.machine import Dimm
from harness.qemu.monitor import Monitor
from harness.qemu.output import exit_report
from harness.qemu.process import State, StoppedOnExit, enable_traces, lists_memory_device, require_new

STATUS: dict[tuple[int, int | None], str] = {
    (libvirt.VIR_DOMAIN_RUNNING, None): "running",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP): "prelaunch",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION): "finish-migrate",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_CRASHED): "internal-error",
    (libvirt.VIR_DOMAIN_PAUSED, None): "paused",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED): "postmigrate",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED): "internal-error",
    (libvirt.VIR_DOMAIN_SHUTOFF, None): "shutdown",
    (libvirt.VIR_DOMAIN_CRASHED, None): "internal-error",
}
"""(libvirt state, reason or None for any other) -> the QEMU run state it stands for."""
_STATE_NAMES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
                libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed"}


LIBVIRTS_OWN = frozenset({"device_add", "device_del", "object-add", "object-del"})
"""QMP that changes a domain's devices: libvirt's to do (it keeps the live definition that a
migration carries), so the driver never sends it behind libvirt's back."""
USER_ALIAS = "ua-"
"""libvirt's prefix for a device id the user chose: QEMU's id of a DIMM plugged through libvirt."""


def qemu_status(state: int, reason: int) -> str:
    return STATUS.get((state, reason)) or STATUS.get((state, None)) or f"libvirt-state-{state}"


class DomainMonitor(Monitor):
    """The side's "QMP": libvirt calls, written to the same transcript."""

    def __init__(self, side: LibvirtSide) -> None:
        super().__init__(side.role, Path("/nonexistent"), side.paths.transcript,
                         on_lost=side.lost)
        self._side = side

    def connect(self, alive: Callable[[], bool], timeout: float) -> None:
        raise HarnessError(f"{self.name}: a libvirt domain has no QMP socket of ours")

    @property
    def connected(self) -> bool:
        return self._side.domain is not None

    def cmd(self, command: str, timeout: float = 30.0, **args: Any) -> Any:
        if command in LIBVIRTS_OWN:
            raise HarnessError(f"{self.name}: {command} over QMP would change the domain behind "
                               "libvirt's back; the libvirt driver plugs through libvirt's API")
        if command == "cont":
            return self.call("resume", {}, lambda dom: dom.resume() or {})
        if command == "query-status":
            return self.call("state", {}, _status)
        if command == "migrate-set-parameters" and set(args) == {"downtime-limit"}:
            ms = args["downtime-limit"]
            return self.call("migrateSetMaxDowntime", {"downtime": ms},
                             lambda dom: dom.migrateSetMaxDowntime(ms, 0) or {})
        return self.call(f"qemuMonitorCommand {command}", args,
                         lambda dom: self._raw(dom, command, args))

    def call(self, name: str, args: dict[str, Any], api: Callable[[libvirt.virDomain], Any]) -> Any:
        """``api`` on the side's domain, written to the transcript; libvirt's refusal is a
        QmpCommandError in its words (a product failure), a domain gone is the side's crash."""
        dom = self._side.require_domain()
        self._log("->", {"libvirt": name, "arguments": args})
        try:
            result = api(dom)
        except libvirt.libvirtError as exc:
            self._log("<-", {"libvirt-error": libvirt_words(exc)})
            raise (self._side.lost() or QmpCommandError(
                self.name, name, args, "libvirt", libvirt_words(exc))) from exc
        self._log("<-", {"return": result})
        return result

    def _raw(self, dom: libvirt.virDomain, command: str, args: dict[str, Any]) -> Any:
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(
            dom, json.dumps({"execute": command, "arguments": args}), 0))
        if "error" in reply:
            self._log("<-", reply)
            raise QmpCommandError(self.name, command, args, reply["error"].get("class", ""),
                                  reply["error"].get("desc", ""))
        return reply.get("return")

    def events(self) -> list[dict[str, Any]]:
        raise HarnessError(f"{self.name}: QMP events belong to libvirt under the libvirt driver")

    def wait_event(self, match: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any] | None:
        raise HarnessError(f"{self.name}: QMP events belong to libvirt under the libvirt driver")

    def close(self) -> None:
        """Nothing of ours to close: the connection is the daemon's."""


def _status(dom: libvirt.virDomain) -> dict[str, str]:
    state, reason = dom.state()
    return {"status": qemu_status(state, reason),
            "libvirt": f"{_STATE_NAMES.get(state, state)} (reason {reason})"}


class LibvirtSide(StoppedOnExit):
    """A role's domain on ``daemon``: defined and started paused (source), or arriving by
    migration (destination, :meth:`expect_incoming`); destroyed when the cell ends (a context
    manager)."""

    def __init__(self, role: str, host: Host, build: Build, paths: SidePaths,
                 workspace: Workspace, daemon: LibvirtDaemon, name: str, xml: str) -> None:
        self.role = role
        self.host = host
        self.build = build
        self.argv: list[str] = []
        """Empty: libvirt started this QEMU (:class:`harness.hostload.meter.StarvationMeter`
        reads that)."""
        self.paths = paths
        self.workspace = workspace
        self.state = State.NEW
        self.daemon = daemon
        self.name = name
        self.xml = xml
        self.domain: libvirt.virDomain | None = None
        self.arriving = False
        self.traced: tuple[str, ...] = ()
        """Trace events for a domain still to arrive: the driver puts them on its command line."""
        self.migrated_xml: str | None = None
        """The live definition this side's domain last migrated with (libvirt ends its QEMU)."""
        self.domain_monitor = DomainMonitor(self)
        self.monitor: Monitor = self.domain_monitor
        # No on_quiet: a silent guest is not asked about here (no query-status ping of
        # harness.qemu.process.hang_check), as it never was under this driver.
        self.console = Console(role, paths.console, on_closed=self.lost)

    def start(self, timeout: float = 30.0) -> None:
        """Define the domain and start it paused, then connect the console."""
        require_new(self.role, self.state)
        self.state = State.RUNNING
        try:
            self.domain = self.daemon.conn.defineXML(self.xml)
            self.domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            self.console.connect(self.alive, timeout)
        except (libvirt.libvirtError, HarnessError) as exc:
            why = libvirt_words(exc) if isinstance(exc, libvirt.libvirtError) else str(exc)
            output = self.output()
            self.stop()
            raise QemuStartError(f"{self.role} domain ({self.build.name}) did not start: {why}",
                                 [self.xml], None, output) from exc

    def expect_incoming(self) -> None:
        """The domain is being made by an incoming migration: alive until it says otherwise."""
        self.state = State.RUNNING
        self.arriving = True

    def arrived(self) -> None:
        """The incoming migration finished: from now on the side is the daemon's domain."""
        self.domain = self.daemon.conn.lookupByName(self.name)
        self.arriving = False

    def require_domain(self) -> libvirt.virDomain:
        if self.domain is None and self.arriving:
            raise HarnessError(f"{self.role}: no domain until the migration defines it from the "
                               "source's definition; under the libvirt driver a destination gets "
                               "nothing of its own before (e.g. a CPU core: not written yet)")
        if self.domain is None:
            raise HarnessError(f"{self.role}: no domain yet (state {self.state.value})")
        return self.domain

    def alive(self) -> bool:
        if self.state is not State.RUNNING:
            return False
        if self.domain is None:
            return self.arriving
        try:
            return bool(self.domain.isActive())
        except libvirt.libvirtError:
            return False

    @property
    def exitcode(self) -> int | None:
        return None

    def ended(self) -> str:
        if self.domain is None:
            return "is not a domain yet"
        try:
            state, reason = self.domain.state()
        except libvirt.libvirtError as exc:
            return f"cannot be asked ({libvirt_words(exc)})"
        return f"is {_STATE_NAMES.get(state, state)} (libvirt reason {reason})"

    def killed(self) -> bool:
        """Crashed, in libvirt's words (QEMU died without being asked to)."""
        try:
            state, reason = self.require_domain().state()
        except (libvirt.libvirtError, HarnessError):
            return False
        return qemu_status(state, reason) == "internal-error"

    def lost(self) -> QemuCrashed | None:
        """The console or a call failed: a domain libvirt no longer runs is the finding."""
        if self.domain is None or self.state is State.STOPPED:
            return None
        time.sleep(0.2)  # libvirt notices QEMU's exit through its monitor
        if self.alive():
            return None
        return QemuCrashed(exit_report(f"{self.role} domain ({self.build.name}) {self.ended()}",
                                       self.output()))

    def send_signal(self, signum: int) -> None:
        raise HarnessError("fault injection by signal is not written for the libvirt driver")

    def trace(self, patterns: tuple[str, ...]) -> None:
        """On a running domain's QEMU through its monitor; a destination still to arrive gets them
        on its command line, in the definition it is migrated with."""
        if self.domain is None:
            self.traced = patterns
        else:
            enable_traces(self.monitor, patterns)

    def plug_dimm(self, dimm: Dimm) -> None:
        """``virDomainAttachDeviceFlags``, live, as libvirt users plug memory: libvirt makes the
        backend and the pc-dimm, and keeps the DIMM (slot and base) in the live definition."""
        xml = dimm_xml(dimm, self.dimm_id(dimm))
        self.domain_monitor.call("attachDeviceFlags", {"xml": xml, "flags": "VIR_DOMAIN_AFFECT_LIVE"},
                          lambda dom: dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE) or {})

    def dimm_id(self, dimm: Dimm) -> str:
        return USER_ALIAS + dimm.id

    def has_dimm(self, dimm: Dimm) -> bool:
        """QEMU's view while the domain runs; for a source libvirt ended after the migration,
        whether the definition it migrated with had the DIMM."""
        if self.alive():
            return lists_memory_device(self.monitor, self.dimm_id(dimm))
        return self.migrated_xml is not None and self.dimm_id(dimm) in dimm_aliases(self.migrated_xml)

    def output(self) -> str:
        return self.daemon.qemu_log(self.name)

    def stop(self) -> None:
        """Destroy the domain; its QEMU's output (libvirt's log of it) is kept as evidence."""
        if self.state is State.STOPPED:
            return
        self.console.close()
        if output := self.output():
            self.paths.output.write_text(output)
        if self.domain is not None:
            try:
                if self.domain.isActive():
                    self.domain.destroy()
            except libvirt.libvirtError:
                pass  # the daemon's own stop destroys what is left
        self.state = State.STOPPED
