"""Drive one live migration between two started QEMU processes and collect QEMU's figures,
and both QEMUs' machine state across the hop.

A destination started with ``-S`` (:func:`harness.qemu.argv.qemu_argv` starts every incoming
role so) stays paused once it loaded the stream: its machine state is read there, as loaded,
then it is resumed (a live migration) or left paused for the caller (the source was paused).
The source, in ``postmigrate`` with its CPUs as they were at the stop, is read afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import MigrationFailed, MigrationTimeout, QemuCrashed, QmpCommandError
from harness.machinestate.capture import capture
from harness.machinestate.compare import MachineStateComparison, compare_all
from harness.machinestate.model import MachineStateError
from harness.migration.relay import Relay
from harness.migration.transport import Transport
from harness.qemu.output import exit_report
from harness.qemu.process import PING_S, QemuProcess

_FINAL = ("completed", "failed", "cancelled")
PING_EVERY_S = 2.0
"""How often both QEMUs are asked for their status while a migration runs."""
STREAM_PREFIX = "stream-"  # streams are recorded as stream-<src role>-<dst role>.bin


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
    figures: MigrationFigures
    stream: Path | None
    stream_bytes: int
    wall_s: float
    machine_state: MachineStateComparison | None = None
    """The source at its stop against the destination as loaded; None when not read."""
    machine_state_unread: str | None = None
    """Why ``machine_state`` is None (QEMU refused or printed what the parser does not know,
    the destination was not held, the driver cannot read it)."""


def held(dst: QemuProcess) -> bool:
    """``dst`` was started to stay paused after its incoming migration (``-incoming`` and -S)."""
    return "-S" in dst.argv and "-incoming" in dst.argv


def migrate(
    src: QemuProcess, dst: QemuProcess, transport: Transport, *, timeout: float,
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
    for side in (src, dst):
        side.monitor.cmd("migrate-set-capabilities",
                         capabilities=[{"capability": "events", "state": True}])
    dst.monitor.cmd("migrate-incoming", uri=transport.incoming)
    # A source that was itself a destination (a ping-pong's second hop) still holds the
    # MIGRATION events of its incoming migration: drop them, they are not this hop's.
    src.monitor.events()
    live = src.monitor.cmd("query-status")["status"] == "running"
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
    return MigrationResult(figures, record, sent, time.monotonic() - started, state, unread)


def _machine_state(src: QemuProcess, dst: QemuProcess, deadline: float, live: bool,
                   evidence: Path | None) -> tuple[MachineStateComparison | None, str | None]:
    """Read the loaded destination (held paused), resume it if the migration was live, then
    read the source; a crash or hang on either side is raised, as anywhere else."""
    if not held(dst):
        _wait_destination_running(dst, deadline, "running" if live else "paused")
        return None, f"{dst.role} was not started with -S: it ran before it could be read"
    _wait_destination_running(dst, deadline, "paused")
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
    if live:
        _wait_destination_running(dst, deadline, "running")
    try:
        before = capture(src, f"source {src.role}", files["source"])
    except (MachineStateError, QmpCommandError) as exc:
        before, unread = None, unread or f"source {src.role} not read: {exc}"
    if before is None or after is None:
        return None, unread
    return compare_all(before, after, hold_ms), None


def stream_path(rundir: Path, src: QemuProcess, dst: QemuProcess) -> Path:
    """Where a hop's stream is recorded: ``stream-<src role>-<dst role>.bin``."""
    return rundir / f"{STREAM_PREFIX}{src.role}-{dst.role}.bin"


def _complete(
    src: QemuProcess, dst: QemuProcess, uri: str, deadline: float, relay: Relay | None,
    triggers: list[tuple[Callable[[], None], int]], live: bool = True,
) -> MigrationFigures:
    src.monitor.cmd("migrate", uri=uri)
    status = _wait_final(src, dst, deadline, triggers)
    figures = MigrationFigures.from_query(src.monitor.cmd("query-migrate"))
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
    src: QemuProcess, dst: QemuProcess, deadline: float, triggers: list[tuple[Callable[[], None], int]]
) -> str:
    """Until the migration ends; each trigger ``(action, n)`` runs once, while the migration is
    active and the source has sent at least ``n`` bytes."""
    next_ping = time.monotonic() + PING_EVERY_S
    while time.monotonic() < deadline:
        if time.monotonic() >= next_ping:
            # Both QEMUs must keep answering: a hung one is the finding, not a slow migration.
            src.monitor.cmd("query-migrate", timeout=PING_S)
            dst.monitor.cmd("query-status", timeout=PING_S)
            next_ping = time.monotonic() + PING_EVERY_S
        if triggers:
            reply = src.monitor.cmd("query-migrate")
            sent = reply.get("ram", {}).get("transferred", 0)
            due = [t for t in triggers if reply.get("status") == "active" and sent >= t[1]]
            for action, _ in due:
                action()
            triggers = [t for t in triggers if t not in due]
        event = src.monitor.wait_event(
            lambda e: e["event"] == "MIGRATION" and e["data"]["status"] in _FINAL, timeout=0.5
        )
        if event is not None:
            return str(event["data"]["status"])
        _require_alive(src, "source")
        if not dst.alive():
            # The source may only notice later; the destination's exit is the finding.
            raise _exited(dst, "destination", "during migration")
    reply = src.monitor.cmd("query-migrate")
    src.monitor.cmd("migrate_cancel")
    raise MigrationTimeout(f"migration not finished after its time limit; last status: {reply}")


def wait_destination_running(dst: QemuProcess, timeout: float) -> None:
    """Until ``dst`` runs after an incoming migration (resumed here if it was :func:`held`
    paused after the load); MigrationFailed if it dies instead."""
    deadline = time.monotonic() + timeout
    if held(dst):
        _wait_destination_running(dst, deadline, "paused")
        dst.monitor.cmd("cont")
    _wait_destination_running(dst, deadline)


def _wait_destination_running(dst: QemuProcess, deadline: float, until: str = "running") -> None:
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


def _require_alive(side: QemuProcess, name: str) -> None:
    if not side.alive():
        raise QemuCrashed(exit_report(f"{name} QEMU {side.ended()} during migration", side.output()))


def _exited(side: QemuProcess, name: str, when: str) -> MigrationFailed | QemuCrashed:
    """A destination that exited by itself refused the migration; one killed by a signal
    crashed (or was killed), which no known refusal explains."""
    head = f"{name} QEMU {side.ended()} {when}"
    if side.killed():
        return QemuCrashed(exit_report(head, side.output()))
    return MigrationFailed(exit_report(head, side.output()))

