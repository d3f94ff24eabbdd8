"""The build kind protocol: a build as matrix.yaml declares it (``builds.<name>.kind``).

Each kind is one module with a frozen dataclass implementing :class:`BuildSpec`, registered
by name in :data:`harness.builds.kinds.BUILD_KINDS`. The matrix loader, the sites and the
drivers ask a spec these questions, never which kind it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from harness.builds.model import Build

if TYPE_CHECKING:
    from harness.hosts.ssh import SshHost
    from harness.matrix.reader import Reader


class BuildSpec(Protocol):
    kind: ClassVar[str]
    """Its ``kind:`` in matrix.yaml."""

    @property
    def name(self) -> str:
        """The build's name in matrix.yaml (``qemu-7.2``)."""
        ...

    def __hash__(self) -> int:
        """Specs are frozen: what a build supports is cached by its spec."""
        ...

    @classmethod
    def from_matrix(cls, name: str, entry: Reader) -> BuildSpec:
        """The spec from its matrix.yaml mapping; a ConfigError naming the key otherwise."""
        ...

    def provision(self) -> Build:
        """Make the build runnable on this machine (e.g. debootstrap on first use) and say
        where its QEMU is; a BuildError saying what to do otherwise."""
        ...

    def on_lab_host(self, host: SshHost) -> Build:
        """The build as it is installed on lab host ``host`` (nothing is provisioned there)."""
        ...

    def lab_refusal(self) -> str | None:
        """Why lab hosts cannot have this build (said when matrix.yaml is loaded), or None."""
        ...

    def nested_refusal(self) -> str | None:
        """Why nested hosts cannot run this build, or None: it is the QEMU their image has
        (Debian bookworm's, :mod:`harness.nested.image`)."""
        ...
