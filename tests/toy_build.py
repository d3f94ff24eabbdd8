"""A toy build kind, the way a new one is added: this module plus one line of registration
(``BUILD_KINDS["toy"] = "toy_build:ToyBuild"``). It is the host's own QEMU under the
name the matrix gives it, with a ``note:`` key of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from harness.builds.host_package import HostPackageBuild
from harness.builds.model import Build
from harness.matrix.reader import Reader

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost


@dataclass(frozen=True)
class ToyBuild:
    kind: ClassVar[str] = "toy"
    name: str
    note: str

    @classmethod
    def from_matrix(cls, name: str, entry: Reader) -> ToyBuild:
        entry.only("kind", "note")
        return cls(name, entry.get("note", str, required=True))

    def provision(self) -> Build:
        return HostPackageBuild(self.name).provision()

    def on_lab_host(self, host: SshHost) -> Build:
        return HostPackageBuild(self.name).on_lab_host(host)

    def lab_refusal(self) -> str | None:
        return None

    def nested_refusal(self) -> str | None:
        return HostPackageBuild(self.name).nested_refusal()
