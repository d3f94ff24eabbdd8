"""The validated matrix: frozen data built once from matrix.yaml and passed down."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass

from harness.builds.spec import BuildSpec


@dataclass(frozen=True)
class Timeouts:
    boot_s: float = 60.0
    migrate_s: float = 120.0
    beat_s: float = 15.0


@dataclass(frozen=True)
class GuestSettings:
    cpu: str = "POWER9"
    memory_mb: int = 512
    smp: int = 2
    maxcpus: int = 2
    firmware: str = "auto"
    devices: tuple[str, ...] = ("virtio-rng-pci",)
    kernel: str = "goldmig"  # the golden image's kernel: goldmig (our own) or debian


@dataclass(frozen=True)
class ScenarioRef:
    """One variant of one scenario (variant "" for a scenario without variants)."""

    scenario: str
    variant: str = ""

    @property
    def name(self) -> str:
        """As in cell ids: ``scenario`` or ``scenario-variant``."""
        return f"{self.scenario}-{self.variant}" if self.variant else self.scenario


@dataclass(frozen=True)
class Group:
    """Every ordered pair of ``builds`` (same-build pairs too), and each of ``builds`` with each
    of ``against`` both ways, x machines x scenario variants x drivers."""

    name: str
    builds: tuple[str, ...]
    machines: tuple[str, ...]
    scenarios: tuple[ScenarioRef, ...]
    drivers: tuple[str, ...] = ("qemu",)
    against: tuple[str, ...] = ()
    """Builds paired with ``builds`` but not with each other (new builds against the old ones)."""
    accels: tuple[str, ...] = ("tcg",)
    """``tcg`` cells run on the matrix's ``hosts:``, ``kvm`` cells on its ``kvm_hosts:``."""

    def pairs(self) -> list[tuple[str, str]]:
        pairs = [(src, dst) for src in self.builds for dst in self.builds]
        for other in self.against:
            pairs += [pair for build in self.builds for pair in ((build, other), (other, build))]
        return pairs


@dataclass(frozen=True)
class KnownFailure:
    """A declared expected failure: cells it covers, the failure it expects, why, and proof."""

    cells: tuple[str, ...]
    checks: tuple[str, ...]
    """Ids (globs) of the checks it explains, e.g. ``timer-ticks-on-schedule``."""
    match: str
    """Searched in each named check's message (name, bound, what was measured, evidence)."""
    reason: str
    evidence: str
    intermittent: bool = False

    def covers(self, cell_id: str) -> bool:
        return any(fnmatch.fnmatchcase(cell_id, pattern) for pattern in self.cells)

    def names(self, check_id: str) -> bool:
        return any(fnmatch.fnmatchcase(check_id, pattern) for pattern in self.checks)

    def explains(self, check_id: str, message: str) -> bool:
        return self.names(check_id) and re.search(self.match, message) is not None

    @property
    def key(self) -> str:
        """Identifies the entry across runs (what it covers and explains; not its prose)."""
        text = "\0".join((*self.cells, "|", *self.checks, "|", self.match))
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class LabHost:
    """A real remote host reached over SSH (``lab.source`` / ``lab.destination``)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    accel: str = "kvm"
    workdir: str = "/var/tmp/goldmig"
    netns: str | None = None
    """Dial from inside this network namespace (a lab network kept in a namespace)."""


@dataclass(frozen=True)
class Cell:
    src: str
    dst: str
    machine: str
    scenario: str
    variant: str = ""
    driver: str = "qemu"
    """What runs the guest: ``qemu`` (command lines and QMP) or ``libvirt``."""
    accel: str = "tcg"
    """The guest's accelerator: ``tcg``, or ``kvm`` (on nested or lab hosts)."""

    @property
    def id(self) -> str:
        """``source>destination/machine/scenario[-variant]``: short and stable; a cell of another
        driver than the direct one starts with ``<driver>:``, a KVM cell with ``kvm:``."""
        cell = f"{self.src}>{self.dst}/{self.machine}/{ScenarioRef(self.scenario, self.variant).name}"
        cell = cell if self.driver == "qemu" else f"{self.driver}:{cell}"
        return f"kvm:{cell}" if self.accel == "kvm" else cell


@dataclass(frozen=True)
class Matrix:
    source: str
    builds: dict[str, BuildSpec]
    guest: GuestSettings
    tb_slack_ms: int
    timeouts: Timeouts
    groups: tuple[Group, ...]
    selections: dict[str, tuple[str, ...]]
    default_selection: str
    known_failures: tuple[KnownFailure, ...]
    keep_streams: str = "failed"
    hosts: str = "local"
    lab: tuple[LabHost, LabHost] | None = None
    """Source and destination host when ``hosts`` or ``kvm_hosts`` is ``lab``."""
    kvm_hosts: str = "nested"
    """Where ``accel: kvm`` cells run: ``nested`` (L1 VMs booted here) or ``lab``."""

    def hosts_of(self, cell: Cell) -> str:
        """The site kind ``cell`` runs on (lab hosts run every cell of a matrix on them)."""
        return self.kvm_hosts if cell.accel == "kvm" and self.hosts != "lab" else self.hosts

    def cells(self) -> list[Cell]:
        """All cells, in matrix order, without duplicates."""
        seen: dict[str, Cell] = {}
        for group in self.groups:
            for accel in group.accels:
                for driver in group.drivers:
                    for src, dst in group.pairs():
                        for machine in group.machines:
                            for ref in group.scenarios:
                                cell = Cell(src, dst, machine, ref.scenario, ref.variant, driver, accel)
                                seen.setdefault(cell.id, cell)
        return list(seen.values())

    def select(self, selection: str) -> list[Cell]:
        patterns = self.selections[selection]
        return [c for c in self.cells() if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]

    def known_failures_for(self, cell_id: str) -> list[KnownFailure]:
        """Every entry covering the cell (a cell can fail in more than one declared way)."""
        return [k for k in self.known_failures if k.covers(cell_id)]
