"""``hosts: netns``: side a and side b each in a network namespace of their own, reached over
SSH (an sshd per namespace), the stream crossing a veth link over TCP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.builds.model import Build
from harness.hosts.base import Host
from harness.hosts.local import LocalHost
from harness.hosts.netns import NamespacePair, sweep_stale
from harness.migration.transport import NamespaceTransport
from harness.runner.roles import ROLES
from harness.sites.base import Placement
from harness.sites.local import OnThisMachine

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class NamespaceSite(OnThisMachine):
    kind: ClassVar[str] = "netns"

    def place(self, builds: tuple[Build, Build], rundir: Path, readable: list[Path], recording: bool,
              local: LocalHost, stack: ExitStack) -> Placement:
        pair = stack.enter_context(NamespacePair(
            builds[0].root, builds[1].root, writable=[rundir], readable=readable,
            side_readable=(builds[0].own_dirs, builds[1].own_dirs), evidence=rundir))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="connect") as pool:  # handshakes at once
            by_side: dict[str, Host] = dict(zip("ab", pool.map(pair.host, "ab"), strict=True))
        return Placement({name: by_side[r.side] for name, r in ROLES.items()},
                         lambda src, dst: NamespaceTransport(pair, ROLES[dst.role].side, recording))

    def sweep(self) -> None:
        sweep_stale()
