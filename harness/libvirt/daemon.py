"""One side's libvirtd: private state, started inside its namespace host, always stopped.

Each daemon keeps its run, etc, lib, cache and log directories in a temp dir
of its own (``gm-lv-<pid>-...``), bound by the namespace host's sandbox where
the release's libvirtd expects them (:meth:`LibvirtDaemon.mounts`), so two
daemons of two releases share nothing but the veth link. It listens on no
TCP port: the harness reaches it through its unix socket (bound out of the
sandbox at ``<home>/run/libvirt-sock``), and a peer daemon through
``qemu+ssh://`` with the cell's SSH key and the namespace hosts' known
host keys. Stopping destroys every domain, kills the daemon and removes its
state; a run killed outright leaves the daemon to its namespace's sweep and
its temp dir to :func:`sweep_homes`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import libvirt

from harness.errors import HarnessError
from harness.hosts.setns import pid_alive
from harness.hosts.ssh import SshHost

STATE = {"etc": "/etc/libvirt", "lib": "/var/lib/libvirt", "cache": "/var/cache/libvirt",
         "log": "/var/log/libvirt", "run": "/run/libvirt", "home": "/root"}
"""Private directory -> where libvirtd looks for it inside the sandbox. ``/root`` too: a peer
daemon's ``qemu+ssh://`` runs root's login shell there, and the host's root dot files
(e.g. pyenv's rehash warning) must not write into libvirt's stream."""
HOME_RE = re.compile(r"^gm-lv-(\d+)-")
LIBVIRTD = "/usr/sbin/libvirtd"
START_S = 20.0


class LibvirtDaemonError(HarnessError):
    """A libvirtd that did not start or answer: a harness break, with its log."""


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr by default; ours are raised with their text."""


libvirt.registerErrorHandler(_quiet, None)


class LibvirtDaemon:
    """libvirtd of one namespace side (``a`` or ``b``), reachable at :attr:`uri`."""

    def __init__(self, label: str, evidence: Path, capabilities: Path | None = None) -> None:
        """``capabilities``: where libvirt's probe of this side's QEMU is kept between cells
        (see :meth:`seed_capabilities`); None probes afresh every time."""
        self.label = label
        self.address = ""
        self.evidence = evidence
        self.capabilities = capabilities
        self.home = Path(tempfile.mkdtemp(prefix=f"gm-lv-{os.getpid()}-{label}-"))
        for name in (*STATE, "ssh"):
            (self.home / name).mkdir()
        self._seeded = self.seed_capabilities()
        self._host: SshHost | None = None
        self._conn: libvirt.virConnect | None = None
        self.version = ""
        self.started_s = 0.0

    def seed_capabilities(self) -> bool:
        """Copy libvirt's cached probe of the emulator into this daemon's private cache.

        libvirt probes a QEMU binary it has not seen (about 2 s under TCG here)
        and keeps the result in ``/var/cache/libvirt/qemu/capabilities``; it
        checks that file itself on load (binary and libvirtd times, versions,
        host) and probes again when it no longer holds. A copy is the daemon's
        own, so nothing is shared while it runs.
        """
        if self.capabilities is None or not self.capabilities.is_dir():
            return False
        shutil.copytree(self.capabilities, self.home / "cache/qemu/capabilities")
        return True

    def _keep_capabilities(self) -> None:
        """After a first probe: offer it to later cells (one writer wins, whole or not at all)."""
        probed = self.home / "cache/qemu/capabilities"
        if self.capabilities is None or self._seeded or not any(probed.glob("*.xml")):
            return
        self.capabilities.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=".part-", dir=self.capabilities.parent))
        shutil.copytree(probed, part, dirs_exist_ok=True)
        try:
            part.rename(self.capabilities)
        except OSError:  # another cell kept its probe first
            shutil.rmtree(part, ignore_errors=True)

    def mounts(self) -> list[tuple[Path, Path]]:
        """Host dir -> sandbox path pairs for :class:`~harness.hosts.netns.NamespacePair`."""
        return [(self.home / name, Path(path)) for name, path in STATE.items()]

    @property
    def ssh_dir(self) -> Path:
        """Shared read-only with this side: the key and known hosts its peer URI uses."""
        return self.home / "ssh"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.home / 'run/libvirt-sock'}"

    def peer_uri(self, peer: LibvirtDaemon) -> str:
        """How this daemon reaches ``peer`` for a peer-to-peer migration (over SSH)."""
        return f"qemu+ssh://root@{peer.address}/system?command={self.ssh_dir / 'ssh'}&no_tty=1"

    def configure(self, address: str, client_key: Path, known_hosts: Path) -> None:
        """Write libvirtd's and the QEMU driver's config (listening, migrating on ``address``)
        and this side's SSH wrapper."""
        self.address = address
        etc = self.home / "etc"
        (etc / "libvirtd.conf").write_text(
            'listen_tls = 0\nlisten_tcp = 0\nunix_sock_group = "root"\n'
            'unix_sock_rw_perms = "0700"\nauth_unix_rw = "none"\n'
            f'host_uuid = "{uuid.uuid4()}"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
        (etc / "qemu.conf").write_text(
            'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
            'security_driver = "none"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n'
            'stdio_handler = "file"\n'
            f'migration_address = "{self.address}"\nmigration_host = "{self.address}"\n')
        key = self.ssh_dir / "key"
        shutil.copyfile(client_key, key)
        key.chmod(0o600)
        shutil.copyfile(known_hosts, self.ssh_dir / "known_hosts")
        wrapper = self.ssh_dir / "ssh"
        wrapper.write_text(
            "#!/bin/sh\n# goldmig: this side's way to its peer's sshd (no unknown host keys)\n"
            f"exec /usr/bin/ssh -i {key} -o UserKnownHostsFile={self.ssh_dir / 'known_hosts'} "
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes "
            '"$@"\n')
        wrapper.chmod(0o755)

    def start(self, host: SshHost) -> None:
        """Start libvirtd in ``host``'s sandbox and connect; LibvirtDaemonError with its log."""
        started = time.monotonic()
        self._host = host
        proc = host.run_command(["sh", "-c", f"exec {LIBVIRTD} -d -p /run/libvirt/libvirtd.pid "
                                 "-f /etc/libvirt/libvirtd.conf </dev/null >/dev/null 2>&1"],
                                timeout=START_S)
        if proc.returncode != 0:
            raise self._broken(f"exited with code {proc.returncode} at start")
        deadline = time.monotonic() + START_S
        while True:
            try:
                self._conn = libvirt.open(self.uri)
                break
            except libvirt.libvirtError as exc:
                # It forks before its drivers start, so a driver that fails ends it later.
                if time.monotonic() > deadline or not self._running(host):
                    raise self._broken(f"does not answer on {self.uri}: "
                                       f"{exc.get_error_message()}") from exc
                time.sleep(0.05)
        version = self._conn.getLibVersion()
        self.version = f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"
        self.started_s = time.monotonic() - started

    @staticmethod
    def _running(host: SshHost) -> bool:
        return host.run_command(["sh", "-c", "kill -0 $(cat /run/libvirt/libvirtd.pid)"],
                                timeout=10.0).returncode == 0

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            raise HarnessError(f"libvirtd of side {self.label} used while not connected")
        return self._conn

    def log(self) -> str:
        path = self.home / "log/libvirtd.log"
        return path.read_text(errors="replace") if path.exists() else "(no log written)"

    def qemu_log(self, domain: str) -> str:
        """QEMU's own stdout/stderr for ``domain`` (libvirt's per-domain log)."""
        path = self.home / "log/qemu" / f"{domain}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _broken(self, what: str) -> LibvirtDaemonError:
        return LibvirtDaemonError(f"libvirtd of side {self.label} ({self.address}) {what}; "
                                  f"its log:\n{self.log().strip()[-2000:] or '(empty)'}")

    def stop(self) -> None:
        """Destroy every domain, close, kill the daemon, keep its logs, remove its state."""
        if not self.home.exists():
            return
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                for dom in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None
        if self._host is not None and self._host.alive:
            self._host.run_command(["sh", "-c", "kill -9 $(cat /run/libvirt/libvirtd.pid) "
                                    "2>/dev/null; true"], timeout=10.0)
        self._keep_logs()
        self._keep_capabilities()
        shutil.rmtree(self.home, ignore_errors=True)

    def _keep_logs(self) -> None:
        self.evidence.mkdir(parents=True, exist_ok=True)
        log = self.home / "log"
        if (log / "libvirtd.log").exists():
            shutil.copyfile(log / "libvirtd.log", self.evidence / f"libvirtd-{self.label}.log")


def sweep_homes() -> list[Path]:
    """Remove the state of daemons whose run was killed (the daemons die with their namespace)."""
    removed = []
    for home in Path(tempfile.gettempdir()).glob("gm-lv-*"):
        match = HOME_RE.match(home.name)
        if match and not pid_alive(int(match[1])):
            shutil.rmtree(home, ignore_errors=True)
            removed.append(home)
    return removed
