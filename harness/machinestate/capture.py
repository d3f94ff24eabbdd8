"""Read one QEMU's machine state through its QMP monitor (HMP over ``human-monitor-command``).

What is read, and why (RAM is left out: scenarios read the RAM blocks, and the pages
travel in the stream the harness records):

- ``info registers -a``: every vCPU's architected registers (GPRs, FPRs, MSR, SPRs, TB,
  DECR): the ``cpu`` vmstate of each CPU.
- ``info pic``: the interrupt controller, XICS (each ICP's XIRR/CPPR, MFRR; each ICS
  source's priority and status) or XIVE (each thread context's rings; each source's PQ
  bits, EAS and END with its event queue position): the ``icp``, ``ics``, ``spapr-xive``
  and ``xive-tctx`` vmstates. A lost or doubled interrupt shows here first.
- ``info pci``: each PCI function's BARs as the guest programmed them, its IRQ and pin,
  bridge windows: the config space in each ``pci`` device's vmstate, which a destination
  must not reset to its own defaults.

Not read: ``info tlb`` (a POWER9 guest runs radix; the SLB it prints is empty),
``info cpus`` (thread ids only), ``info irq`` (pseries has no statistics).
All three commands exist, with the formats :mod:`harness.machinestate.parse` reads, in
QEMU 5.2, 7.2 and 10.0. They work under the libvirt driver too (its monitor passes QMP
through), but libvirt ends the source's QEMU when a migration completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.machinestate.model import MachineState, MachineStateError
from harness.machinestate.parse import PARSERS, parse

if TYPE_CHECKING:
    from harness.runner.side import Side

COMMANDS: tuple[str, ...] = tuple(PARSERS)


def capture(side: Side, label: str, evidence: Path | None = None) -> MachineState:
    """``side``'s state now, named ``label`` (e.g. ``source src``); the raw texts are also
    written to ``evidence`` when given. QEMU refusing a command raises its QmpCommandError."""
    texts = {command: _hmp(side, command) for command in COMMANDS}
    if evidence is not None:
        evidence.write_text("".join(f"### {c}\n{t.rstrip()}\n\n" for c, t in texts.items()))
    return parse(texts, label)


def _hmp(side: Side, command: str) -> str:
    args: dict[str, Any] = {"command-line": command}
    out = side.monitor.cmd("human-monitor-command", **args)
    if not isinstance(out, str):
        raise MachineStateError(command, f"{side.role} returned {out!r}, not text")
    return out
