"""Two L1 host VMs booted under this machine's QEMU (L0), joined by a private link.

Each L1 gets two NICs: a control NIC on the L0's user network, whose ports 22 (SSH) and
4444 (a recorded stream's destination) the L0 forwards from loopback ports here, and where
the L0's host address is this machine's loopback (a recorded stream's relay), and a link
NIC on a UDP socket netdev between the two L0s (loopback ports), which carries the
migration stream between the hosts as the lab network would. Addresses are in
198.18.0.0/15 (benchmarking), as the namespace hosts': the control network is
198.18.2.0/24 inside each L0, the link 198.18.1.0/24 between the L1s.

A pair lives as long as the process that booted it (one per pytest-xdist worker) and
is reused by every nested cell the process runs; :func:`pair_for` boots a new one when
the old one died. The L0s die with the process (``PR_SET_PDEATHSIG``); their temp dir
(``gm-l1-<pid>-*``: consoles, sockets) is removed by :func:`sweep_stale` when its
process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HostError
from harness.hosts.setns import pid_alive
from harness.hosts.ssh import SshHost, SshTarget
from harness.nested.image import HostImage

L0_BINARY = "/usr/bin/qemu-system-ppc64"
L0_MACHINE = ("pseries,cap-nested-hv=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,"
              "cap-ccf-assist=off,x-vof=on")
"""The L0 machine: nested HV on (the L1 runs KVM-HV on it), the caps TCG cannot provide off."""
LINK_NET = "198.18.1"
CONTROL_NET = "198.18.2"
WORKDIR = "/var/tmp/goldmig"
MIGRATION_PORT = 4444
"""Where a destination QEMU in an L1 listens (one incoming migration per host at a time)."""
READY_LINE = "goldmig-l1: ready"
BOOT_TIMEOUT_S = 120.0
DIR_RE = re.compile(r"^gm-l1-(\d+)-")
SIDES = ("a", "b")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class L1Settings:
    """How big each L1 is: it holds the guest's QEMU (two of them during a ping-pong)."""

    memory_mb: int = 2048
    cpus: int = 3


class L1:
    """One L1 host VM: its L0 process, console log and SSH port."""

    def __init__(self, side: str, process: subprocess.Popen[bytes], console: Path, ssh_port: int,
                 migration_port: int) -> None:
        self.side = side
        self.name = f"l1-{side}"
        self.process = process
        self.console = console
        self.ssh_port = ssh_port
        self.migration_port = migration_port
        """This machine's loopback port the L0 forwards to the L1's :data:`MIGRATION_PORT`."""
        self.link_address = f"{LINK_NET}.{SIDES.index(side) + 1}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def console_text(self, start: int = 0) -> str:
        with contextlib.suppress(FileNotFoundError), self.console.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")
        return ""

    def console_size(self) -> int:
        try:
            return self.console.stat().st_size
        except FileNotFoundError:
            return 0


class NestedPair:
    """Two L1s booted from ``image``; :meth:`target` says how to reach each over SSH."""

    def __init__(self, image: HostImage, settings: L1Settings = L1Settings()) -> None:
        self.image = image
        self.settings = settings
        self.workdir = Path(tempfile.mkdtemp(prefix=f"gm-l1-{os.getpid()}-"))
        self.hosts: dict[str, L1] = {}
        self.boot_s = 0.0

    def boot(self) -> None:
        """Start both L0s and wait until both L1s answer on SSH; on failure, stop what started."""
        started = time.monotonic()
        link_ports = _free_ports(socket.SOCK_DGRAM, 2)
        ssh_ports = _free_ports(socket.SOCK_STREAM, 4)
        known = "".join(f"[127.0.0.1]:{port} {self.image.host_key}\n" for port in ssh_ports[:2])
        (self.workdir / "known_hosts").write_text(known)
        try:
            for i, side in enumerate(SIDES):
                self.hosts[side] = self._start(side, ssh_ports[i], ssh_ports[2 + i], link_ports[i],
                                               link_ports[1 - i])
            for l1 in self.hosts.values():
                self._wait_ready(l1, started + BOOT_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        self.boot_s = time.monotonic() - started

    def _start(self, side: str, ssh_port: int, migration_port: int, local_udp: int, remote_udp: int) -> L1:
        index = SIDES.index(side) + 1
        ctl_mac, link_mac = f"52:54:00:00:01:0{index}", f"52:54:00:00:02:0{index}"
        append = " ".join([
            "console=hvc0", f"goldmig.name=goldmig-l1-{side}",
            f"goldmig.ctl_mac={ctl_mac}", f"goldmig.ctl_addr={CONTROL_NET}.15/24",
            f"goldmig.ctl_gw={CONTROL_NET}.2",
            f"goldmig.link_mac={link_mac}", f"goldmig.link_addr={LINK_NET}.{index}/24",
        ])
        console = self.workdir / f"l1-{side}-console.log"
        argv = [
            L0_BINARY, "-M", L0_MACHINE, "-accel", "tcg,thread=multi", "-cpu", "POWER9",
            "-m", str(self.settings.memory_mb), "-smp", str(self.settings.cpus),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=con,path={console}", "-device", "spapr-vty,chardev=con",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initramfs), "-append", append,
            "-netdev", f"user,id=ctl,net={CONTROL_NET}.0/24,host={CONTROL_NET}.2,"
                       f"hostfwd=tcp:127.0.0.1:{ssh_port}-{CONTROL_NET}.15:22,"
                       f"hostfwd=tcp:127.0.0.1:{migration_port}-{CONTROL_NET}.15:{MIGRATION_PORT}",
            "-device", f"virtio-net-pci,netdev=ctl,mac={ctl_mac},romfile=",
            "-netdev", f"socket,id=link,udp=127.0.0.1:{remote_udp},localaddr=127.0.0.1:{local_udp}",
            "-device", f"virtio-net-pci,netdev=link,mac={link_mac},romfile=",
        ]
        log = (self.workdir / f"l0-{side}.log").open("wb")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        return L1(side, process, console, ssh_port, migration_port)

    def _wait_ready(self, l1: L1, deadline: float) -> None:
        """Until the L1's init said it is ready and its sshd (started by busybox init after
        that) runs a command."""
        while True:
            if not l1.alive():
                raise HostError(f"nested host {l1.name}: its L0 QEMU exited ({l1.process.returncode}) "
                                f"while booting: {self._l0_log(l1)}; console: {self._tail(l1)}")
            if READY_LINE in l1.console_text():
                try:
                    with SshHost(self.target(l1.side)) as host:
                        host.run_command(["true"], timeout=20.0)
                    return
                except HostError as exc:
                    if time.monotonic() > deadline:
                        raise HostError(f"nested host {l1.name} booted but its sshd does not "
                                        f"answer: {exc}") from exc
            elif time.monotonic() > deadline:
                raise HostError(f"nested host {l1.name} did not boot in {BOOT_TIMEOUT_S:.0f} s; "
                                f"console: {self._tail(l1)}")
            time.sleep(0.3)

    def _l0_log(self, l1: L1) -> str:
        path = self.workdir / f"l0-{l1.side}.log"
        return path.read_text(errors="replace").strip()[-500:] if path.exists() else ""

    @staticmethod
    def _tail(l1: L1) -> str:
        return " | ".join(l1.console_text().strip().splitlines()[-5:])

    def target(self, side: str) -> SshTarget:
        l1 = self.hosts[side]
        return SshTarget(name=l1.name, address="127.0.0.1", port=l1.ssh_port, user="root",
                         key_file=self.image.client_key, known_hosts=self.workdir / "known_hosts",
                         workdir=WORKDIR, connect_timeout=30.0)

    def healthy(self) -> str | None:
        """Why the pair cannot take a cell (an L0 exited, an L1 does not answer), or None."""
        for l1 in self.hosts.values():
            if not l1.alive():
                return f"nested host {l1.name}'s L0 QEMU exited ({l1.process.returncode})"
            try:
                with SshHost(self.target(l1.side)) as host:
                    host.run_command(["true"], timeout=20.0)
            except HostError as exc:
                return f"nested host {l1.name} does not answer on SSH: {exc}"
        return None

    def close(self) -> None:
        for l1 in self.hosts.values():
            if l1.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(l1.process.pid, signal.SIGKILL)
            l1.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


_pair: NestedPair | None = None


def pair_for(image: HostImage) -> tuple[NestedPair, str | None]:
    """This process's pair, booted now if it has none or its last one is unhealthy; with why the
    last one was replaced (None when it was reused or is the first)."""
    global _pair
    replaced = None
    if _pair is not None and (_pair.image != image or (replaced := _pair.healthy()) is not None):
        _pair.close()
        _pair = None
    if _pair is None:
        pair = NestedPair(image)
        pair.boot()
        _pair = pair
        atexit.register(pair.close)
    return _pair, replaced


def sweep_stale() -> list[str]:
    """Remove the temp dirs of pairs whose process is gone (their L0s died with it)."""
    removed = []
    for directory in Path(tempfile.gettempdir()).glob("gm-l1-*"):
        match = DIR_RE.match(directory.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(str(directory))
    return removed


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_ports(kind: socket.SocketKind, count: int) -> list[int]:
    """Loopback ports free now (bound and released; the L0 binds them a moment later)."""
    sockets = [socket.socket(socket.AF_INET, kind) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
