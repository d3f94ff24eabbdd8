"""The machine state of a QEMU before and after one migration hop, compared field by field.

What the guest sees after a migration shows some QEMU bugs only some of the time; the
machine state shows them every time (QEMU 7.2 not migrating the decrementer: the
destination's DECR is unrelated to the source's on every CPU, whatever the guest does
next). One module per job:

- :mod:`~harness.machinestate.model`: :class:`MachineState`, a frozen set of
  :class:`Component` (``CPU 0``, ``ICP 1``, ``TCTX 0``, ``XIVE source 00001000``, ``PCI
  00:01.0`` ...) each with named fields.
- :mod:`~harness.machinestate.capture`: read it from a QEMU over QMP (HMP commands).
- :mod:`~harness.machinestate.parse`: the HMP text of QEMU 5.2, 7.2 and 10.0 into the model.
- :mod:`~harness.machinestate.rules`: fields that may legitimately differ, each with its reason.
- :mod:`~harness.machinestate.compare`: source against destination: :class:`Difference`
  (unexcused), :class:`Excused` (a difference and the rule that excuses it), and the
  :class:`MachineStateComparison` a migration's result carries.
"""

from harness.machinestate.capture import COMMANDS, capture
from harness.machinestate.compare import (
    Difference,
    Excused,
    MachineStateComparison,
    compare,
    compare_all,
    excused,
)
from harness.machinestate.model import Component, MachineState, MachineStateError
from harness.machinestate.parse import parse, parse_pci, parse_pic, parse_registers
from harness.machinestate.rules import RULES, Rule

__all__ = [
    "COMMANDS", "RULES", "Component", "Difference", "Excused", "MachineState",
    "MachineStateComparison", "MachineStateError", "Rule", "capture", "compare", "compare_all",
    "excused", "parse", "parse_pci", "parse_pic", "parse_registers",
]
