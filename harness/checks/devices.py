"""Device traffic: every virtio-rng the guest has must answer on the destination, its interrupt
(MSI through its PHB) delivered.

A virtio-rng read is a request in a virtqueue that the device completes by
interrupt, so one read of more than the driver keeps buffered exercises the
device's queue state, its MSI-X vector and the PHB's MSI path on the
destination. The agent reads each hardware RNG in turn and counts each
virtio device's interrupts during the read (PROTOCOL.md, "Device traffic").
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.checks.result import CheckResult, not_applicable
from harness.guest.protocol import RNG_READ_BYTES, RngRead, RngReport

NAME = "virtio devices answer on the destination"


@dataclass(frozen=True)
class DeviceTraffic:
    """The guest's virtio-rng reads on the source before the migration and on the destination
    after it (None: the guest did not answer), and the PCI functions that must answer there."""

    before: RngReport
    after: RngReport | None
    expected: tuple[str, ...]


def read_of(report: RngReport, pci: str) -> RngRead | None:
    """The read during which ``pci``'s virtio device took interrupts, None if there was none."""
    virtio = next((d.virtio for d in report.devices if d.pci == pci), None)
    return next((r for r in report.reads if virtio is not None and virtio in r.irqs), None)


def worked(report: RngReport, pci: str) -> bool:
    read = read_of(report, pci)
    return read is not None and read.bytes == RNG_READ_BYTES


def describe(report: RngReport, pci: str) -> str:
    """How ``pci``'s read went, for the evidence."""
    if pci not in {d.pci for d in report.devices}:
        return "not in the guest"
    read = read_of(report, pci)
    if read is not None:
        virtio = next(d.virtio for d in report.devices if d.pci == pci)
        return (f"{read.bytes} of {RNG_READ_BYTES} bytes in {read.us / 1000:.1f} ms, "
                f"{read.irqs[virtio]} interrupts")
    unanswered = [f"{r.name}: {max(r.bytes, 0)} bytes in {r.us / 1000:.0f} ms" for r in report.reads
                  if not r.irqs]
    return "no interrupt during any read" + (f" (reads without one: {', '.join(unanswered)})"
                                             if unanswered else "")


def devices_answer(traffic: DeviceTraffic) -> CheckResult:
    """Each expected PCI function read its bytes on the destination with its interrupts delivered."""
    after = traffic.after
    assert after is not None  # the caller reports an unanswered request as not measured
    if not traffic.expected:
        return not_applicable(NAME, "the guest has no virtio device to read (on the source: "
                              f"{len(traffic.before.devices)}; Debian's kernel has no virtio driver "
                              "built in)")
    observed = "; ".join(f"{pci}: {describe(after, pci)}" for pci in traffic.expected)
    source = "; ".join(f"{d.pci}: {describe(traffic.before, d.pci)}" for d in traffic.before.devices)
    return CheckResult(
        NAME, all(worked(after, pci) for pci in traffic.expected),
        f"each of {', '.join(traffic.expected)}: {RNG_READ_BYTES} bytes from "
        "/dev/hwrng, its own interrupts counted", observed,
        f"the agent's rng reads (one per hwrng, 2 s each at most) on the destination; on the "
        f"source before the migration: {source or 'no virtio device'}")
