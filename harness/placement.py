"""Where a cell's QEMU roles run and how the stream travels between them.

``local``: every role on this machine, unix sockets in the run directory.
``netns``: the source (and a ping-pong's return) in namespace a, the
destination in namespace b, reached over SSH; TCP across the veth link.
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
from harness.migration.transport import LocalTransport, NamespaceTransport, Transport
from harness.qemu.process import QemuProcess

_NAMESPACE_OF = {"src": "a", "dst": "b", "back": "a"}


@dataclass(frozen=True)
class Placement:
    hosts: dict[str, Host]
    transport_to: Callable[[QemuProcess], Transport]


def place(
    kind: str, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
    local: LocalHost, stack: ExitStack,
) -> Placement:
    """Hosts for roles src, dst and back; anything made here is closed by ``stack``."""
    if kind == "local":
        return Placement({role: local for role in _NAMESPACE_OF},
                         lambda dst: LocalTransport(rundir, dst.role))
    pair = stack.enter_context(NamespacePair(
        builds[0].root, builds[1].root, writable=[rundir], readable=readable, evidence=rundir))
    by_namespace: dict[str, Host] = {"a": pair.host("a"), "b": pair.host("b")}
    return Placement(
        {role: by_namespace[ns] for role, ns in _NAMESPACE_OF.items()},
        lambda dst: NamespaceTransport(pair, _NAMESPACE_OF[dst.role], recording),
    )
