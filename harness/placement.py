"""Where a cell's QEMU roles run and how the stream travels between them.

``local``: every role on this machine, unix sockets in the run directory.
``netns``: the source (and a ping-pong's return) in namespace a, the
destination (and further ones: again, onward) in namespace b, reached over
SSH; TCP across the veth link.
``lab``: the source (and the return) on the lab's source host, the
destination (and further ones) on its destination host, over SSH; TCP across
the lab network.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness.builds.model import Build
from harness.hosts.base import Host
from harness.hosts.local import LocalHost
from harness.hosts.netns import NamespacePair
from harness.hosts.ssh import SshHost, SshTarget
from harness.matrix.model import LabHost, Matrix
from harness.migration.transport import LabTransport, LocalTransport, NamespaceTransport, Transport
from harness.qemu.process import QemuProcess

_SIDE_OF = {"src": "a", "dst": "b", "back": "a", "again": "b", "onward": "b"}


@dataclass(frozen=True)
class Placement:
    hosts: dict[str, Host]
    """Where each role (src, dst, back, again, onward) runs."""
    transport_to: Callable[[QemuProcess, QemuProcess], Transport]
    """The route from a sending QEMU to a receiving one."""


def place(
    matrix: Matrix, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
    local: LocalHost, stack: ExitStack,
) -> Placement:
    """Hosts for every role (src, dst, back, again, onward); anything made here is closed by ``stack``."""
    if matrix.hosts == "local":
        return Placement({role: local for role in _SIDE_OF},
                         lambda src, dst: LocalTransport(rundir, dst.role))
    if matrix.lab is not None:
        source, destination = matrix.lab
        hosts = {"a": stack.enter_context(SshHost(lab_target(source))),
                 "b": stack.enter_context(SshHost(lab_target(destination)))}
        address = {"a": source.address, "b": destination.address}
        by_role = {role: hosts[side] for role, side in _SIDE_OF.items()}
        return Placement(dict(by_role), lambda src, dst: LabTransport(
            dst, by_role[src.role], by_role[dst.role], address[_SIDE_OF[dst.role]], recording))
    pair = stack.enter_context(NamespacePair(
        builds[0].root, builds[1].root, writable=[rundir], readable=readable,
        side_readable=(builds[0].own_dirs, builds[1].own_dirs), evidence=rundir))
    by_namespace: dict[str, Host] = {"a": pair.host("a"), "b": pair.host("b")}
    return Placement(
        {role: by_namespace[ns] for role, ns in _SIDE_OF.items()},
        lambda src, dst: NamespaceTransport(pair, _SIDE_OF[dst.role], recording),
    )


def lab_target(lab: LabHost) -> SshTarget:
    """How to reach a lab host: its key must already be in ``known_hosts``; nothing is shared."""
    return SshTarget(
        name=lab.name, address=lab.address, port=lab.port, user=lab.user,
        key_file=Path(lab.key_file).expanduser() if lab.key_file else None,
        known_hosts=Path(lab.known_hosts), netns=lab.netns, workdir=lab.workdir,
    )
