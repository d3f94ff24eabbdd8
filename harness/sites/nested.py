"""``accel: kvm`` cells on nested hosts: two pseries VMs (L1) running KVM-HV, booted under this
machine's QEMU (:mod:`harness.nested.pair`) and driven over SSH like lab hosts; the stream
crosses the private link between them (TCP), or the relay here when it is recorded
(:mod:`harness.nested.transport`).

The pair is booted once per process and reused; a pair that died is replaced before the
next cell, which says so in its log. Each cell keeps the slice of both L1 consoles it
covered (``l1-a-console.log``, ``l1-b-console.log``).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.introspect import introspect
from harness.builds.model import Build, BuildInfo
from harness.builds.spec import BuildSpec
from harness.errors import BuildError
from harness.hosts.local import LocalHost
from harness.hosts.ssh import SshHost
from harness.nested.image import HostImage, ensure_host_image
from harness.nested.pair import L0_MACHINE, NestedPair, pair_for, sweep_stale
from harness.nested.transport import NestedTransport
from harness.qemu.machine import TCG_CAP_SETTINGS
from harness.runner.roles import ROLES, SideName
from harness.sites.base import Placement

if TYPE_CHECKING:
    from harness.matrix.model import Matrix

_log = logging.getLogger("goldmig.nested")
L2_BINARY = "/usr/bin/qemu-system-ppc64"


@cache
def _image() -> HostImage:
    return ensure_host_image()


@cache
def _introspected(build: Build) -> BuildInfo:
    """What the L1s' QEMU supports, asked on side a (both L1s boot the same image)."""
    pair, _ = pair_for(_image())
    with SshHost(pair.target("a")) as host:
        return introspect(build, host)


@dataclass(frozen=True)
class NestedSite:
    kind: ClassVar[str] = "nested"
    builds_here: ClassVar[bool] = False
    accel: ClassVar[str] = "kvm"
    in_kernel_irqchip: ClassVar[bool] = False
    """KVM-HV on an emulated POWER9 has no in-kernel XIVE ("IRQ_XIVE capability must be present
    for KVM": QEMU runs with kernel-irqchip=off)."""
    guest_caps: ClassVar[tuple[tuple[str, str], ...]] = TCG_CAP_SETTINGS
    """The L1 runs on a TCG L0 here, which provides none of these to its KVM guests either."""

    @classmethod
    def from_matrix(cls, matrix: Matrix) -> NestedSite:
        return cls()

    def describe(self) -> str:
        return f"nested KVM hosts ({_image().image_id}, L0: this machine's QEMU, TCG, {L0_MACHINE})"

    def locate(self, spec: BuildSpec, side: SideName) -> Build:
        if why := spec.nested_refusal():
            raise BuildError(f"build {spec.name!r} cannot run on nested hosts: {why}")
        image = _image()
        return Build(spec.name, Path("/"), L2_BINARY, package=image.qemu_package)

    def supports(self, build: Build, side: SideName) -> BuildInfo:
        return _introspected(build)

    def refusal(self, scenario: str, local_builds: bool) -> str | None:
        if local_builds:
            return (f"scenario {scenario} records reference streams with the builds on this "
                    "machine; nested hosts run builds of their own image")
        return None

    def place(self, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
              local: LocalHost, stack: ExitStack) -> Placement:
        pair, replaced = pair_for(_image())
        if replaced is not None:
            _log.warning("the nested host pair was replaced before this cell: %s", replaced)
        if pair.boot_s:
            _log.info("nested host pair booted in %.1f s (L1 consoles: %s)", pair.boot_s,
                      ", ".join(str(l1.console) for l1 in pair.hosts.values()))
            pair.boot_s = 0.0
        _keep_consoles(pair, rundir, stack)
        hosts = {side: stack.enter_context(SshHost(pair.target(side))) for side in ("a", "b")}
        by_role = {name: hosts[r.side] for name, r in ROLES.items()}
        return Placement(dict(by_role), lambda src, dst: NestedTransport(
            pair.hosts[ROLES[dst.role].side], recording))

    def sweep(self) -> None:
        sweep_stale()


def _keep_consoles(pair: NestedPair, rundir: Path, stack: ExitStack) -> None:
    """At the cell's end, what each L1 printed during it, into the cell's evidence."""
    starts = {side: l1.console_size() for side, l1 in pair.hosts.items()}

    def keep() -> None:
        for side, l1 in pair.hosts.items():
            (rundir / f"l1-{side}-console.log").write_text(l1.console_text(starts[side]))
    stack.callback(keep)
