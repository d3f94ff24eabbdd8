"""The libvirt driver (``drivers: [libvirt]``): each namespace host's own libvirtd defines,
starts and migrates the guest.

Side a (source, and a ping-pong's return) and side b (destination) each run
the libvirtd of their build's Debian release (:mod:`harness.libvirt.roots`)
with private state (:mod:`harness.libvirt.daemon`). A hop from a to b is
peer-to-peer: ``migrateToURI3`` on a, whose daemon reaches b's over
``qemu+ssh://``; a hop from b back to a is client-managed, ``migrate3``
between the harness's two connections. Recording gives libvirt the
migration URI ``tcp://<dst address>:4444`` (the relay in the destination's
namespace) and has the destination's QEMU listen on that namespace's
loopback, where the relay hands the stream on. The destination is defined by
the source's live definition with its own per-host paths (``--xml`` made from
``virsh dumpxml --migratable``), so a device plugged on the source arrives with
the guest and libvirt starts the destination's QEMU with it. QEMU's figures
are libvirt's completed job statistics (``virDomainGetJobStats``). The machine state
across the hop is not read (:data:`NOT_READ`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import libvirt

from harness.builds.debian_suite import DebianSuiteBuild
from harness.builds.host_package import HostPackageBuild
from harness.builds.model import Build
from harness.builds.spec import BuildSpec
from harness.errors import HarnessError, MigrationFailed, MigrationTimeout
from harness.hosts.local import LocalHost
from harness.hosts.netns import NamespacePair
from harness.hosts.ssh import SshHost
from harness.hosts.workspace import Workspace
from harness.libvirt.daemon import LibvirtDaemon, sweep_homes
from harness.libvirt.domain_xml import DomainFiles, UnsupportedSetup, domain_xml, for_destination
from harness.libvirt.errors import libvirt_words
from harness.libvirt.roots import libvirt_build
from harness.libvirt.side import LibvirtSide
from harness.migration.relay import Relay
from harness.migration.run import MigrationFigures, MigrationResult, stream_path
from harness.migration.transport import Transport
from harness.paths import cache_root
from harness.qemu.argv import SidePaths
from harness.qemu.machine import MachineSetup
from harness.qemu.output import exit_report
from harness.runner.roles import ROLES, Hop
from harness.runner.side import Side
from harness.runner.timing import timed
from harness.sites.base import Placement, Site

if TYPE_CHECKING:
    from harness.runner.context import ScenarioContext

PORT = 4444
"""The migration port: QEMU's on the destination's loopback when recording, else its address."""
ROLES_RUN = ("src", "dst", "back")
"""The roles it places: hops in a row on the destination's side are not written for it."""
_FLAGS = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
NOT_READ = "libvirt driver: not read"
"""Why a libvirt hop's result has no machine state. The destination could be held
(VIR_MIGRATE_PAUSED) and read (qemuMonitorCommand, HMP), but not the source at its stop:
libvirt ends the source's QEMU in the Confirm phase of a completed migration, before the
migration call returns, and offers no point in between to read it."""


class LibvirtDriver:
    """Starts roles as domains of their side's daemon and migrates them between daemons."""

    name: ClassVar[str] = "libvirt"

    def __init__(self, pair: NamespacePair, daemons: dict[str, LibvirtDaemon], placement: Placement) -> None:
        self.pair = pair
        self.daemons = daemons
        self.placement = placement
        self.domain = f"gm-{uuid.uuid4().hex[:12]}"
        self.uuid = str(uuid.uuid4())

    @property
    def label(self) -> str:
        return "libvirt " + " > ".join(f"{self.daemons[side].version}" for side in "ab")

    @classmethod
    def refusal(cls, site: Site, specs: tuple[BuildSpec, BuildSpec]) -> str | None:
        if site.kind == "lab":
            return ("the libvirt driver on lab hosts (their own libvirtd over qemu+ssh://) is not "
                    "written yet")
        if site.kind != "netns":
            return f"the libvirt driver runs on namespace hosts (hosts: netns), not hosts: {site.kind}"
        for spec in specs:
            if not isinstance(spec, (HostPackageBuild, DebianSuiteBuild)):
                return (f"{spec.name} is a {spec.kind} build: the libvirt driver runs kind host and "
                        "kind debian builds, whose Debian release has a libvirtd (the host's libvirtd "
                        "with a build tree as <emulator> is not written yet)")
        return None

    @classmethod
    def builds(cls, specs: tuple[BuildSpec, BuildSpec], located: tuple[Build, Build]) -> tuple[Build, Build]:
        """The same QEMU, in a root that has its release's libvirtd."""
        return libvirt_build(specs[0], located[0]), libvirt_build(specs[1], located[1])

    @classmethod
    def open(cls, site: Site, builds: tuple[Build, Build], rundir: Path, readable: list[Path],
             recording: bool, local: LocalHost, stack: ExitStack, phases: dict[str, float]) -> LibvirtDriver:
        with timed(phases, "libvirt"):
            return open_libvirt(builds, rundir, readable, stack)

    @classmethod
    def sweep(cls, site: Site) -> None:
        if site.kind == "netns":  # libvirtd and its domains die with their namespaces ...
            sweep_homes()  # ... and their private state goes here

    def start(self, ctx: ScenarioContext, role: str, build: Build, setup: MachineSetup,
              ws: Workspace, incoming: bool) -> Side:
        paths = SidePaths.for_role(ctx.rundir, role)
        xml = ""  # an incoming domain is defined by the source's, when it migrates
        if not incoming:
            xml = domain_xml(self.domain, self.uuid, setup, DomainFiles(paths.console, paths.serial_log))
            (ctx.rundir / f"{role}-domain.xml").write_text(xml)
        elif _as_migrated(setup) != _as_migrated(ctx.setup_of("src")):
            raise UnsupportedSetup(f"{role} is set up unlike the source, which the libvirt driver "
                                   "cannot say: libvirt defines a destination by the source's definition")
        daemon = self.daemons[ROLES[role].side]
        side = LibvirtSide(role, self.placement.hosts[role], build, paths, ws, daemon, self.domain, xml)
        ctx.stack.enter_context(side)
        ctx.started.append(side)
        if incoming:
            side.expect_incoming()
        else:
            with ctx.phase("boot"):
                side.start()
        return side

    def migrate(self, ctx: ScenarioContext, src: Side, dst: Side, *,
                timeout: float, cut_after_bytes: int | None,
                while_active: Callable[[], None] | None = None) -> MigrationResult:
        if not (isinstance(src, LibvirtSide) and isinstance(dst, LibvirtSide)):
            raise HarnessError("the libvirt driver migrates only domains it started")
        if cut_after_bytes is not None:
            raise HarnessError("cutting the link mid-migration is not written for the libvirt driver")
        if while_active is not None:
            raise HarnessError("an action during the migration is not written for the libvirt driver")
        record = stream_path(ctx.rundir, src, dst) if ctx.record_stream else None
        label = ROLES[dst.role].side
        src.migrated_xml = src.require_domain().XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        dst.xml = for_destination(src.migrated_xml, _files(src), _files(dst), dst.traced)
        (ctx.rundir / f"{dst.role}-domain.xml").write_text(dst.xml)
        params = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{dst.daemon.address}:{PORT}",
                  libvirt.VIR_MIGRATE_PARAM_DEST_XML: dst.xml}
        if record is not None:
            params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = "127.0.0.1"
        started = time.monotonic()
        logged = {daemon.label: len(daemon.log()) for daemon in (src.daemon, dst.daemon)}
        with self._relay(label, record) as relay:
            error = self._run(src, dst, params, timeout)
            sent = relay.forwarded if relay else 0
            relay_error = relay.error if relay else None
        if error is not None:  # the SSH route was proven when the daemons started
            note = f"\nrelay: {relay_error}" if relay_error else ""
            said = "; ".join(f"libvirtd {d.label} logged: {errors}" for d in (src.daemon, dst.daemon)
                             if (errors := _errors_since(d, logged[d.label])))
            raise MigrationFailed(exit_report(
                f"libvirt: migration {src.role} to {dst.role} failed: {libvirt_words(error)}{note}; "
                f"{said + '; ' if said else ''}destination QEMU said", dst.output())) from error
        dst.arrived()
        status = dst.monitor.cmd("query-status")["status"]
        if status != "running":
            raise MigrationFailed(f"destination domain is {status!r} after migration, not running")
        figures = _figures(dst, src)
        return MigrationResult(Hop(src.role, dst.role), figures, record, sent or figures.transferred_bytes,
                               time.monotonic() - started, machine_state_unread=NOT_READ)

    def _run(self, src: LibvirtSide, dst: LibvirtSide, params: dict[str, str],
             timeout: float) -> libvirt.libvirtError | None:
        """The migration call in a thread, while this one connects the destination's console
        as soon as its QEMU listens (before the guest runs there, so no tick is missed)."""
        dom = src.require_domain()
        failure: list[libvirt.libvirtError] = []

        def call() -> None:
            try:
                if src.daemon.label == "a":  # a reaches b over SSH: peer to peer
                    dom.migrateToURI3(src.daemon.peer_uri(dst.daemon), params,
                                      _FLAGS | libvirt.VIR_MIGRATE_PEER2PEER)
                else:  # back to a: the harness drives both daemons
                    dom.migrate3(dst.daemon.conn, params, _FLAGS)
            except libvirt.libvirtError as exc:
                failure.append(exc)

        dst.expect_incoming()
        worker = threading.Thread(target=call, name=f"migrate-{src.role}-{dst.role}", daemon=True)
        worker.start()
        try:  # a migration that failed has no destination QEMU to wait for
            dst.console.connect(lambda: worker.is_alive() or not failure, timeout)
        except HarnessError:
            if not failure:
                raise
        deadline = time.monotonic() + timeout
        while worker.is_alive() and time.monotonic() < deadline:
            worker.join(0.2)
            if dst.console.closed_by_peer and worker.is_alive():
                # The destination's QEMU went away mid-stream; a source QEMU behind the relay
                # may wait for it forever, so the harness ends the job, as the direct driver does.
                with contextlib.suppress(libvirt.libvirtError):
                    dom.abortJob()
                worker.join(30)
                raise MigrationFailed(exit_report(
                    f"destination QEMU exited during the libvirt migration {src.role} to "
                    f"{dst.role}; libvirt on the source said: "
                    f"{libvirt_words(failure[0]) if failure else 'nothing yet'}; destination QEMU said",
                    dst.output()))
        if worker.is_alive():
            with contextlib.suppress(libvirt.libvirtError):
                dom.abortJob()
            raise MigrationTimeout(f"libvirt migration {src.role} to {dst.role} not finished "
                                   f"after {timeout:.0f}s")
        return failure[0] if failure else None

    @contextlib.contextmanager
    def _relay(self, label: str, record: Path | None) -> Iterator[Relay | None]:
        if record is None:
            yield None
            return
        address = self.pair.side(label).address

        def connect() -> socket.socket:
            conn = socket.create_connection(("127.0.0.1", PORT), timeout=10)
            conn.settimeout(None)
            return conn

        server = self.pair.run_in(label, lambda: socket.create_server((address, PORT), backlog=1))
        with Relay(server, lambda: self.pair.run_in(label, connect), f"{label} 127.0.0.1:{PORT}",
                   record) as relay:
            yield relay


def _errors_since(daemon: LibvirtDaemon, offset: int) -> str:
    """The errors ``daemon`` logged past ``offset``: the API's error can be only the aftermath (a
    peer-to-peer migration that libvirt 9.0 refuses in its Begin phase reaches the caller as
    "End of file while reading data"). virCPUCheckFeature's is left out: libvirt logs it on every
    ppc64 migration ("cannot check guest CPU feature for ppc64 architecture")."""
    lines = [line.split(" : ", 2)[-1] for line in daemon.log()[offset:].splitlines()
             if ": error : " in line and "virCPUCheckFeature" not in line]
    return " | ".join(lines[-3:])


def _as_migrated(setup: MachineSetup) -> MachineSetup:
    """What of a set-up the source's definition carries to its destination: everything but
    the staged files' paths and the DIMMs (plugged on the source, they come along)."""
    return dataclasses.replace(setup, kernel=Path(), initrd=Path(), dimms=())


def _files(side: LibvirtSide) -> DomainFiles:
    return DomainFiles(side.paths.console, side.paths.serial_log)


def _figures(dst: LibvirtSide, src: LibvirtSide) -> MigrationFigures:
    """libvirt's completed-job statistics, from the destination (the cookie brings them)."""
    stats: dict[str, int] = {}
    for side in (dst, src):
        with contextlib.suppress(libvirt.libvirtError):
            stats = side.require_domain().jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if stats:
            break
    if not stats:
        raise HarnessError("libvirt has no completed-job statistics for the migration on either side")
    return MigrationFigures(
        status="completed",
        total_time_ms=int(stats.get("time_elapsed", 0)),
        downtime_ms=int(stats.get("downtime", 0)),
        setup_time_ms=int(stats.get("setup_time", 0)),
        transferred_bytes=int(stats.get("memory_processed", 0)),
        ram_total_bytes=int(stats.get("memory_total", 0)),
        raw={"libvirt-job-stats": stats},
    )


def _check_route(host: SshHost, source: LibvirtDaemon, destination: LibvirtDaemon) -> None:
    """Side a's SSH route to side b's sshd, as its daemon will take it for a peer-to-peer
    migration: a harness break here, so a libvirt error during a migration is libvirt's own."""
    proc = host.run_command([str(source.ssh_dir / "ssh"), f"root@{destination.address}", "true"],
                            timeout=20.0)
    if proc.returncode != 0:
        raise HarnessError(f"side a cannot reach side b's sshd at {destination.address} the way "
                           f"its libvirtd would (qemu+ssh): {proc.stderr.strip()[-500:]}")


def _capabilities(build: Build) -> Path:
    """Where libvirt's probe of ``build``'s QEMU is kept between cells, by the root it runs in."""
    return cache_root() / "libvirt-capabilities" / (build.root.name or "host")


def open_libvirt(builds: tuple[Build, Build], rundir: Path, readable: list[Path],
                 stack: ExitStack) -> LibvirtDriver:
    """A namespace pair with a libvirtd per side; everything is closed by ``stack``."""
    daemons = {label: LibvirtDaemon(label, rundir, _capabilities(build))
               for label, build in zip("ab", builds, strict=True)}
    for daemon in daemons.values():  # state made before the pair, removed even if it fails
        stack.callback(shutil.rmtree, daemon.home, True)
    pair = stack.enter_context(NamespacePair(
        builds[0].root, builds[1].root, writable=[rundir], readable=readable,
        side_readable=((*builds[0].own_dirs, daemons["a"].ssh_dir),
                       (*builds[1].own_dirs, daemons["b"].ssh_dir)),
        side_mounts=(daemons["a"].mounts(), daemons["b"].mounts()), evidence=rundir))
    assert pair.workdir is not None
    hosts = {label: pair.host(label) for label in "ab"}
    for label, daemon in daemons.items():
        stack.callback(daemon.stop)  # before the pair's teardown: domains destroyed, logs kept
        daemon.configure(pair.side(label).address, pair.workdir / "client_key", pair.workdir / "known_hosts")
        daemon.start(hosts[label])
    _check_route(hosts["a"], daemons["a"], daemons["b"])
    placement = Placement({role: hosts[ROLES[role].side] for role in ROLES_RUN}, _own_routes)
    return LibvirtDriver(pair, daemons, placement)


def _own_routes(src: Side, dst: Side) -> Transport:
    raise HarnessError("under the libvirt driver, libvirt migrates (LibvirtDriver.migrate); "
                       "there is no QEMU transport to hand out")
