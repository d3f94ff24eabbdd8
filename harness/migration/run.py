"""Drive one live migration between two started QEMU processes and collect QEMU's figures,
and both QEMUs' machine state across the hop.

A destination started with ``-S`` (:func:`harness.qemu.argv.qemu_argv` starts every incoming
role so) stays paused once it loaded the stream: its machine state is read there, as loaded,
then it is resumed (a live migration) or left paused for the caller (the source was paused).
The source, in ``postmigrate`` with its CPUs as they were at the stop, is read afterwards.

Each hop's phases go to the ``goldmig.migration`` logger at INFO (the cell's ``harness.log``,
:mod:`harness.runner.celllog`): its start, the source's status as it changes, QEMU's figures at the
end, the destination held, read and resumed, and a failure with its message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import MigrationFailed, MigrationTimeout, QemuCrashed, QmpCommandError
from harness.machinestate.capture import capture
from harness.machinestate.compare import KVM_UNMODELLED, MachineStateComparison, compare_all
from harness.machinestate.model import MachineStateError
from harness.migration.relay import Relay
from harness.migration.transport import Transport
from harness.qemu.output import exit_report
from harness.qemu.process import PING_S
from harness.runner.celllog import error_line
from harness.runner.roles import Hop
from harness.runner.side import Side, accel_of

_FINAL = ("completed", "failed", "cancelled")
PING_EVERY_S = 2.0
"""How often both QEMUs are asked for their status while a migration runs."""
STREAM_PREFIX = "stream-"  # streams are recorded as stream-<src role>-<dst role>.bin
log = logging.getLogger("goldmig.migration")


@dataclass(frozen=True)
class MigrationFigures:
    """QEMU's own account of the migration (source's ``query-migrate``)."""

    status: str
    total_time_ms: int
    downtime_ms: int
    setup_time_ms: int
    transferred_bytes: int
    ram_total_bytes: int
    raw: dict[str, Any]

    @classmethod
    def from_query(cls, reply: dict[str, Any]) -> MigrationFigures:
        ram = reply.get("ram", {})
        return cls(
            status=reply.get("status", "unknown"),
            total_time_ms=int(reply.get("total-time", 0)),
            downtime_ms=int(reply.get("downtime", 0)),
            setup_time_ms=int(reply.get("setup-time", 0)),
            transferred_bytes=int(ram.get("transferred", 0)),
            ram_total_bytes=int(ram.get("total", 0)),
            raw=reply,
        )


@dataclass(frozen=True)
class MigrationResult:
    hop: Hop
    """Which roles this migration went between."""
    figures: MigrationFigures
    stream: Path | None
    stream_bytes: int
    wall_s: float
    machine_state: MachineStateComparison | None = None
    """The source at its stop against the destination as loaded; None when not read."""
    machine_state_unread: str | None = None
    """Why ``machine_state`` is None (QEMU refused or printed what the parser does not know,
    the destination was not held, the driver cannot read it)."""


def held(dst: Side) -> bool:
    """``dst`` was started to stay paused after its incoming migration (``-incoming`` and -S)."""
    return "-S" in dst.argv and "-incoming" in dst.argv


def migrate(
    src: Side, dst: Side, transport: Transport, *, timeout: float,
    record: Path | None = None, cut_after_bytes: int | None = None,
    while_active: Callable[[], None] | None = None, evidence: Path | None = None,
) -> MigrationResult:
    """Migrate ``src`` to ``dst`` (started with ``-incoming defer``) over ``transport``.

    With ``record`` the stream goes through a relay that writes it there. With
    ``cut_after_bytes`` the transport's link is cut once the source has sent
    that much (fault injection). ``while_active`` is called once, as soon as the source
    reports the migration active (e.g. a command QEMU must refuse mid-migration).
    Returns once the destination runs, or, when the source was paused (a non-live migration),
    once the destination has loaded the stream and stays paused as QEMU's global state says
    (the caller resumes it). Both machine states are read across the hop (the destination
    paused before it runs, when it was started :func:`held`); their texts go to
    ``evidence``/machine-<src role>-<dst role>-{source,destination}.txt when given.
    Raises :class:`MigrationFailed` when
    QEMU reports failure or the destination does not come up, and
    :class:`MigrationTimeout` when nothing final happens within ``timeout``.
    """
    hop = f"hop {src.role} -> {dst.role}"
    log.info("%s: starts; destination listens on %s%s%s, time limit %.0f s", hop, transport.incoming,
             f", stream recorded to {record.name}" if record is not None else "",
             f", link cut after {cut_after_bytes} bytes sent" if cut_after_bytes is not None else "",
             timeout)
    try:
        return _migrate(src, dst, transport, timeout=timeout, record=record,
                        cut_after_bytes=cut_after_bytes, while_active=while_active, evidence=evidence)
    except Exception as exc:  # logged, and raised as it is
        log.info("%s: failed: %s", hop, error_line(exc))
        raise


def _migrate(
    src: Side, dst: Side, transport: Transport, *, timeout: float,
    record: Path | None, cut_after_bytes: int | None,
    while_active: Callable[[], None] | None, evidence: Path | None,
) -> MigrationResult:
    for side in (src, dst):
        side.monitor.cmd("migrate-set-capabilities",
                         capabilities=[{"capability": "events", "state": True}])
    dst.monitor.cmd("migrate-incoming", uri=transport.incoming)
    # A source that was itself a destination (a ping-pong's second hop) still holds the
    # MIGRATION events of its incoming migration: drop them, they are not this hop's.
    src.monitor.events()
    status = src.monitor.cmd("query-status")["status"]
    live = status == "running"
    log.info("capabilities set (events, on both sides); %s waits on migrate-incoming; source %s is %s: "
             "a %s migration", dst.role, src.role, status, "live" if live else "non-live")
    started = time.monotonic()
    with transport.route(record) as (uri, relay):
        triggers = [(lambda: transport.cut(), cut_after_bytes)] if cut_after_bytes is not None else []
        if while_active is not None:
            triggers.append((while_active, 0))
        figures = _complete(src, dst, uri, started + timeout, relay, triggers, live)
        # the relay stays up until the destination has loaded it all (the source's "completed"
        # comes while the relay may still hold the stream's tail)
        state, unread = _machine_state(src, dst, started + timeout, live, evidence)
        sent = relay.forwarded if relay else figures.transferred_bytes
    wall = time.monotonic() - started
    log.info("hop %s -> %s: done in %.2f s wall, %d stream bytes%s", src.role, dst.role, wall, sent,
             " recorded" if record is not None else "")
    return MigrationResult(Hop(src.role, dst.role), figures, record, sent, wall, state, unread)


def _machine_state(src: Side, dst: Side, deadline: float, live: bool,
                   evidence: Path | None) -> tuple[MachineStateComparison | None, str | None]:
    """Read the loaded destination (held paused), resume it if the migration was live, then
    read the source; a crash or hang on either side is raised, as anywhere else."""
    if not held(dst):
        log.info("destination %s was not started with -S: machine state not read", dst.role)
        _wait_destination_running(dst, deadline, "running" if live else "paused")
        log.info("destination %s %s", dst.role, "running" if live else "paused (non-live)")
        return None, f"{dst.role} was not started with -S: it ran before it could be read"
    _wait_destination_running(dst, deadline, "paused")
    # the guest's console is one byte stream: an agent line the stop cut in two ends on the
    # destination's console, which must start with the source's unfinished part
    dst.console.continue_from(src.console)
    log.info("destination %s held paused with the stream loaded: reading its machine state", dst.role)
    seen = time.monotonic()
    files = {side: evidence / f"machine-{src.role}-{dst.role}-{side}.txt" if evidence else None
             for side in ("source", "destination")}
    unread: str | None = None
    try:
        after = capture(dst, f"destination {dst.role}", files["destination"])
    except (MachineStateError, QmpCommandError) as exc:
        after, unread = None, f"destination {dst.role} not read: {exc}"
    if live:
        dst.monitor.cmd("cont")
    hold_ms = (time.monotonic() - seen) * 1000 if live else 0.0
    # logged once resumed: the hold (part of what the machine-state checks allow for) stays as it was
    log.info("destination %s: %s", dst.role, "machine state read" if after is not None else unread)
    if live:
        log.info("destination %s resumed (cont) after %.0f ms held", dst.role, hold_ms)
        _wait_destination_running(dst, deadline, "running")
        log.info("destination %s running", dst.role)
    else:
        log.info("destination %s left paused for the caller (the source was paused)", dst.role)
    try:
        before = capture(src, f"source {src.role}", files["source"])
    except (MachineStateError, QmpCommandError) as exc:
        before, unread = None, unread or f"source {src.role} not read: {exc}"
        log.info("source %s: not read: %s", src.role, exc)
    else:
        log.info("source %s: machine state read (postmigrate)", src.role)
    if before is None or after is None:
        return None, unread
    unmodelled = KVM_UNMODELLED if accel_of(src) == "kvm" else ()
    return compare_all(before, after, hold_ms, unmodelled=unmodelled), None


def stream_path(rundir: Path, src: Side, dst: Side) -> Path:
    """Where a hop's stream is recorded: ``stream-<src role>-<dst role>.bin``."""
    return rundir / f"{STREAM_PREFIX}{src.role}-{dst.role}.bin"


def _complete(
    src: Side, dst: Side, uri: str, deadline: float, relay: Relay | None,
    triggers: list[tuple[Callable[[], None], int]], live: bool = True,
) -> MigrationFigures:
    src.monitor.cmd("migrate", uri=uri)
    log.info("migrate issued: %s -> %s to %s%s", src.role, dst.role, uri,
             " (through the recording relay)" if relay is not None else "")
    status = _wait_final(src, dst, deadline, triggers)
    figures = MigrationFigures.from_query(src.monitor.cmd("query-migrate"))
    log.info("source %s reports %s: total %d ms, downtime %d ms, setup %d ms, %d bytes transferred "
             "of %d RAM%s", src.role, status, figures.total_time_ms, figures.downtime_ms,
             figures.setup_time_ms, figures.transferred_bytes, figures.ram_total_bytes,
             f"; error-desc: {figures.raw['error-desc']}" if "error-desc" in figures.raw else "")
    if status != "completed" and not dst.alive():
        raise _exited(dst, "destination", "during migration")  # the cause, not the source's view of it
    if status != "completed":
        note = f"\nrelay: {relay.error}" if relay and relay.error else ""
        raise MigrationFailed(
            f"source reports migration {status}: {figures.raw.get('error-desc', 'no error-desc')}"
            f"{note}\ndestination said: {dst.output()[-1500:] or '(nothing)'}"
        )
    return figures


def _wait_final(
    src: Side, dst: Side, deadline: float, triggers: list[tuple[Callable[[], None], int]]
) -> str:
    """Until the migration ends; each trigger ``(action, n)`` runs once, while the migration is
    active and the source has sent at least ``n`` bytes."""
    next_ping = time.monotonic() + PING_EVERY_S
    seen = _StatusLog(src.role)
    while time.monotonic() < deadline:
        if time.monotonic() >= next_ping:
            # Both QEMUs must keep answering: a hung one is the finding, not a slow migration.
            progress = src.monitor.cmd("query-migrate", timeout=PING_S)
            there = dst.monitor.cmd("query-status", timeout=PING_S)
            log.info("still migrating: source %s, %s bytes sent; destination %s %s", progress.get("status"),
                     progress.get("ram", {}).get("transferred", "no"), dst.role, there.get("status"))
            next_ping = time.monotonic() + PING_EVERY_S
        if triggers:
            reply = src.monitor.cmd("query-migrate")
            sent = reply.get("ram", {}).get("transferred", 0)
            due = [t for t in triggers if reply.get("status") == "active" and sent >= t[1]]
            for action, at in due:
                action()
                log.info("source active, %d bytes sent: ran the action due at %d bytes", sent, at)
            triggers = [t for t in triggers if t not in due]
        event = src.monitor.wait_event(
            lambda e: seen.final(e) and e["data"]["status"] in _FINAL, timeout=0.5
        )
        if event is not None:
            return str(event["data"]["status"])
        _require_alive(src, "source")
        if not dst.alive():
            # The source may only notice later; the destination's exit is the finding.
            raise _exited(dst, "destination", "during migration")
    reply = src.monitor.cmd("query-migrate")
    log.info("time limit reached with the source %s: cancelling", reply.get("status"))
    src.monitor.cmd("migrate_cancel")
    raise MigrationTimeout(f"migration not finished after its time limit; last status: {reply}")


class _StatusLog:
    """Logs each status of the source's MIGRATION events once (an event ``wait_event`` does not
    take is offered again at the next call), known by its timestamp."""

    def __init__(self, role: str) -> None:
        self._role = role
        self._logged: set[tuple[object, object, str]] = set()

    def final(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` is a MIGRATION event (logging its status the first time it is seen)."""
        if event.get("event") != "MIGRATION":
            return False
        status = str(event["data"]["status"])
        stamp = event.get("timestamp", {})
        key = (stamp.get("seconds"), stamp.get("microseconds"), status)
        if key not in self._logged:
            self._logged.add(key)
            log.info("source %s: migration %s", self._role, status)
        return True


def wait_destination_running(dst: Side, timeout: float) -> None:
    """Until ``dst`` runs after an incoming migration (resumed here if it was :func:`held`
    paused after the load); MigrationFailed if it dies instead."""
    deadline = time.monotonic() + timeout
    if held(dst):
        _wait_destination_running(dst, deadline, "paused")
        log.info("destination %s held paused after the load: resuming (cont)", dst.role)
        dst.monitor.cmd("cont")
    _wait_destination_running(dst, deadline)
    log.info("destination %s running", dst.role)


def _wait_destination_running(dst: Side, deadline: float, until: str = "running") -> None:
    """Until ``dst`` is in state ``until`` (running; paused after a non-live migration)."""
    while True:
        if not dst.alive():
            raise _exited(dst, "destination", "after the source completed; it failed to load the stream")
        try:
            status = dst.monitor.cmd("query-status")["status"]
        except QemuCrashed:
            continue  # the loop's liveness check reports it as a failed load
        if status == until:
            return
        if status not in ("inmigrate", "paused", "prelaunch", "finish-migrate"):
            raise MigrationFailed(f"destination is {status!r} after migration, not {until}")
        if time.monotonic() > deadline:
            raise MigrationTimeout(f"destination still {status!r} at the time limit")
        dst.monitor.wait_event(lambda e: e["event"] in ("RESUME", "MIGRATION"), timeout=0.2)


def _require_alive(side: Side, name: str) -> None:
    if not side.alive():
        raise QemuCrashed(exit_report(f"{name} QEMU {side.ended()} during migration", side.output()))


def _exited(side: Side, name: str, when: str) -> MigrationFailed | QemuCrashed:
    """A destination that exited by itself refused the migration; one killed by a signal
    crashed (or was killed), which no known refusal explains."""
    head = f"{name} QEMU {side.ended()} {when}"
    if side.killed():
        return QemuCrashed(exit_report(head, side.output()))
    return MigrationFailed(exit_report(head, side.output()))

