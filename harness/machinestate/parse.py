"""QEMU's HMP text (``info registers -a``, ``info pic``, ``info pci``) into :class:`MachineState`.

Formats, as QEMU 5.2, 7.2 and 10.0 print them (target/ppc/cpu_init.c or translate.c
``ppc_cpu_dump_state``; hw/intc/xics.c ``icp_pic_print_info``/``ics_pic_print_info``;
hw/intc/spapr_xive.c and xive.c ``*_pic_print_info``; hw/pci/pci-hmp-cmds.c or
monitor/hmp-cmds.c ``hmp_info_pci``):

- registers: a ``CPU#n`` line per CPU, then lines of ``NAME value`` pairs; ``GPR00 a b c d``
  names four registers; ``TB <TBU> <TB>`` (decimal; the second is the whole 64-bit timebase);
  ``DECR`` decimal; ``RES <addr>`` (5.2, 7.2) or ``RES <len>@<addr>`` (10.0: the reservation's
  length, ``RES length``); the CR's ``[ G L ... ]`` decoding is left out (CR itself is a field).
- XICS: ``CPU n XIRR=.. (ptr) PP=.. MFRR=..`` (component ``ICP n``), ``ICS lo..hi ptr``
  (component ``ICS``), ``  1000 MSI prio status`` (component ``ICS source 1000``).
- XIVE: ``CPU[nnnn]:`` thread-context rows under a ``QW`` header (component ``TCTX n``,
  fields ``<ring> <column>``), then one line per LISN with its PQ bits, EISN and, when
  unmasked and its END is valid, the END's target, priority, queue index/size, address,
  generation and last queue entries (component ``XIVE source <lisn>``).
- PCI: a ``Bus b, device d, function f:`` block per device (component ``PCI bb:dd.f``).

Host pointers that QEMU prints (the ICP's ``xirr_owner``, the ICS object) are left out:
they are addresses in each QEMU process, not machine state. A line that fits none of
these is a :class:`MachineStateError` naming it: never a silently empty model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from harness.machinestate.model import Component, MachineState, MachineStateError

REGISTERS = "info registers -a"
PIC = "info pic"
PCI = "info pci"

_HEX = re.compile(r"^[0-9a-f]+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_CPU_HEADER = re.compile(r"^CPU#(\d+)$")
_CPU_TAG = re.compile(r"^CPU#\d+$")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_INDEXED = re.compile(r"^([A-Za-z]+)(\d+)$")
_RES = re.compile(r"^([0-9a-f]+)@([0-9a-f]+)$")


def _is_name(token: str) -> bool:
    """A register name: a word with a letter that is not a hex digit (values are bare hex)."""
    return bool(_NAME.match(token)) and not _HEX.match(token)


def _is_value(token: str) -> bool:
    return bool(_HEX.match(token) or _RES.match(token))


def parse_registers(text: str) -> tuple[Component, ...]:
    """Every CPU of ``info registers -a``, as ``CPU <index>``."""
    cpus: list[Component] = []
    name: str | None = None
    fields: dict[str, str] = {}

    def close() -> None:
        if name is not None:
            if not fields:
                raise MachineStateError(REGISTERS, f"{name} has no registers")
            cpus.append(Component(name, fields, REGISTERS))

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _CPU_HEADER.match(line):
            close()
            name, fields = f"CPU {int(m[1])}", {}
            continue
        if name is None:
            raise MachineStateError(REGISTERS, "registers before any CPU#n header", raw)
        tokens = [t for t in _BRACKETS.sub(" ", line).split() if not _CPU_TAG.match(t)]
        for key, value in _pairs(tokens, raw):
            if key in fields:
                raise MachineStateError(REGISTERS, f"{name}: {key} printed twice", raw)
            fields[key] = value
    close()
    if not cpus:
        raise MachineStateError(REGISTERS, f"no CPU#n header in {len(text)} characters of output")
    return tuple(cpus)


def _pairs(tokens: list[str], raw: str) -> list[tuple[str, str]]:
    """``NAME v [v ...]`` groups of one register line as (field, value) pairs."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        key = tokens[i]
        if not _is_name(key):
            raise MachineStateError(REGISTERS, f"{key!r} where a register name was expected", raw)
        values = []
        i += 1
        while i < len(tokens) and not _is_name(tokens[i]):
            if not _is_value(tokens[i]):
                raise MachineStateError(REGISTERS, f"{key}: {tokens[i]!r} is not a value", raw)
            values.append(tokens[i])
            i += 1
        out += _named(key, values, raw)
    return out


def _named(key: str, values: list[str], raw: str) -> list[tuple[str, str]]:
    if key == "TB" and len(values) == 2:  # "TB %08u %08lu": TBU, then the whole timebase
        return [("TBU", values[0]), ("TB", values[1])]
    if key == "RES" and len(values) == 1 and (m := _RES.match(values[0])):
        return [("RES", m[2]), ("RES length", m[1])]
    if len(values) == 1 and _HEX.match(values[0]):
        return [(key, values[0])]
    if len(values) > 1 and (m := _INDEXED.match(key)):
        first, width = int(m[2]), len(m[2])
        return [(f"{m[1]}{first + k:0{width}d}", v) for k, v in enumerate(values)]
    raise MachineStateError(REGISTERS, f"{key} followed by {len(values)} values {values}", raw)


# XICS (hw/intc/xics.c)
_ICP = re.compile(r"^CPU (\d+) XIRR=([0-9a-f]+) \((?:\(nil\)|0x[0-9a-f]+)\) PP=([0-9a-f]+) "
                  r"MFRR=([0-9a-f]+)$")
_ICS = re.compile(r"^ICS ([0-9a-f]+)\.\.([0-9a-f]+) (?:\(nil\)|0x[0-9a-f]+)$")
_ICS_SOURCE = re.compile(r"^([0-9a-f]+) (LSI|MSI) ([0-9a-f]{2}) ([0-9a-f]{2})$")
# XIVE (hw/intc/xive.c xive_tctx_pic_print_info, hw/intc/spapr_xive.c spapr_xive_pic_print_info)
_TCTX_HEADER = re.compile(r"^CPU\[([0-9a-f]+)\]:\s+QW\s+(.+)$")
_TCTX_ROW = re.compile(r"^CPU\[([0-9a-f]+)\]:\s+([A-Z]+)\s+(.+)$")
_LISN_HEADER = re.compile(r"^LISN\s+PQ\s+EISN\s+CPU/PRIO\s+EQ$")
_LISN = re.compile(r"^([0-9a-f]{8}) (LSI|MSI) ([P-])([Q-])([A ]) ([M ]) ([0-9a-f]{8})(.*)$")
_END = re.compile(r"^(-?\d+)/(\d+)\s+(\d+)/\s*(\d+) @([0-9a-f]+) \^(\d+)\s*(?:\[(.*)\])?$")
_IRQCHIP = re.compile(r"^irqchip: (\S+)$")
_NOT_AVAILABLE = re.compile(r"^Interrupt controller information not available for \S+\.$")
"""10.0 prints this for each CPU object that has no pic information of its own."""


def parse_pic(text: str) -> tuple[Component, ...]:
    """The interrupt controller of ``info pic``: XICS (``ICP n``, ``ICS``, ``ICS source n``)
    or XIVE (``TCTX n``, ``XIVE source n``), and ``irqchip``."""
    found: dict[str, dict[str, str]] = {}
    columns: dict[str, list[str]] = {}

    def put(component: str, key: str, value: str, raw: str) -> None:
        fields = found.setdefault(component, {})
        if key in fields:
            raise MachineStateError(PIC, f"{component}: {key} printed twice", raw)
        fields[key] = value

    for raw in text.splitlines():
        line = raw.strip()
        # The XIVE line keeps its fixed columns (flags may be blank): match before stripping.
        lisn = _LISN.match(raw.lstrip().rstrip("\r\n"))
        if not line or _LISN_HEADER.match(line) or _NOT_AVAILABLE.match(line):
            continue
        if m := _ICP.match(line):
            for key, value in zip(("XIRR", "PP", "MFRR"), m.groups()[1:], strict=True):
                put(f"ICP {int(m[1])}", key, value, raw)
        elif m := _ICS.match(line):
            put("ICS", "range", f"{m[1]}..{m[2]}", raw)
        elif m := _ICS_SOURCE.match(line):
            for key, value in zip(("type", "priority", "status"), m.groups()[1:], strict=True):
                put(f"ICS source {m[1]}", key, value, raw)
        elif m := _TCTX_HEADER.match(line):
            columns[m[1]] = m[2].split()
        elif m := _TCTX_ROW.match(line):
            cols = columns.get(m[1])
            values = m[3].split()
            if cols is None or len(cols) != len(values):
                raise MachineStateError(PIC, f"thread context row without a matching QW header "
                                        f"({cols})", raw)
            for col, value in zip(cols, values, strict=True):
                put(f"TCTX {int(m[1], 16)}", f"{m[2]} {col}", value, raw)
        elif lisn is not None:
            _lisn(lisn, raw, put)
        elif m := _IRQCHIP.match(line):
            put("irqchip", "mode", m[1], raw)
        else:
            raise MachineStateError(PIC, "a line of no known interrupt controller format", raw)
    if not found:
        raise MachineStateError(PIC, f"no interrupt controller state in {len(text)} characters")
    return tuple(Component(name, fields, PIC) for name, fields in found.items())


def _lisn(m: re.Match[str], raw: str, put: Callable[[str, str, str, str], None]) -> None:
    name = f"XIVE source {m[1]}"
    put(name, "type", m[2], raw)
    put(name, "PQ", m[3] + m[4], raw)
    put(name, "asserted", "yes" if m[5] == "A" else "no", raw)
    put(name, "masked", "yes" if m[6] == "M" else "no", raw)
    put(name, "EISN", m[7], raw)
    rest = m[8].strip()
    if not rest:
        return
    end = _END.match(rest)
    if end is None:
        raise MachineStateError(PIC, f"LISN {m[1]}: END part {rest!r} not understood", raw)
    for key, value in zip(("target", "priority", "EQ index", "EQ entries", "EQ address",
                           "EQ generation"), end.groups()[:6], strict=True):
        put(name, key, value, raw)
    if end[7] is not None:
        put(name, "EQ tail", " ".join(end[7].split()), raw)


# PCI (hmp_info_pci_device)
_PCI_DEVICE = re.compile(r"^Bus\s+(\d+), device\s+(\d+), function (\d+):$")
_PCI_LINES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"^(.+): PCI device ([0-9a-f]{4}:[0-9a-f]{4})$"), ("class", "id")),
    (re.compile(r"^PCI subsystem ([0-9a-f]{4}:[0-9a-f]{4})$"), ("subsystem",)),
    (re.compile(r"^IRQ (-?\d+)(?:, pin ([A-D]))?\.?$"), ("IRQ", "pin")),
    (re.compile(r"^(BAR\d+): (.+?)\.?$"), ()),
    (re.compile(r"^BUS (\d+)\.$"), ("bus",)),
    (re.compile(r"^secondary bus (\d+)\.$"), ("secondary bus",)),
    (re.compile(r"^subordinate bus (\d+)\.$"), ("subordinate bus",)),
    (re.compile(r"^((?:prefetchable )?memory range|IO range) (\[.*\])$"), ()),
    (re.compile(r'^id "(.*)"$'), ("id",)),
)
_UNMAPPED_BAR = re.compile(r"^(.+) at 0xffffffffffffffff \[0x[0-9a-f]+\]$")
"""A BAR the guest left unassigned (PCI_BAR_UNMAPPED, all ones) as QEMU 7.2 and older print it,
with the address and its end; QEMU 10.0 prints the same state as ``<type> (not mapped)``."""


def _bar(value: str) -> str:
    """A BAR's value in one form for every build: an unmapped one as ``<type> (not mapped)``."""
    unmapped = _UNMAPPED_BAR.match(value)
    return f"{unmapped[1]} (not mapped)" if unmapped else value


def parse_pci(text: str) -> tuple[Component, ...]:
    """Every PCI function of ``info pci`` as ``PCI bb:dd.f`` (a second PHB's same address gets
    `` #2``): class, id, IRQ and pin, BARs as the guest programmed them, bridge windows."""
    devices: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _PCI_DEVICE.match(line):
            base = f"PCI {int(m[1]):02x}:{int(m[2]):02x}.{m[3]}"
            taken = sum(1 for n, _ in devices if n == base or n.startswith(base + " #"))
            devices.append((base if not taken else f"{base} #{taken + 1}", {}))
            continue
        if not devices:
            raise MachineStateError(PCI, "a device line before any Bus/device/function header", raw)
        fields = devices[-1][1]
        for pattern, keys in _PCI_LINES:
            if pm := pattern.match(line):
                pairs = zip(keys, pm.groups(), strict=True) if keys else [(pm[1], pm[2])]
                for key, value in pairs:
                    if value is not None:
                        fields[key] = _bar(value) if key.startswith("BAR") else value
                break
        else:
            raise MachineStateError(PCI, "a line of no known PCI device format", raw)
    return tuple(Component(name, fields, PCI) for name, fields in devices)


PARSERS: Mapping[str, Callable[[str], tuple[Component, ...]]] = {
    REGISTERS: parse_registers, PIC: parse_pic, PCI: parse_pci,
}
"""HMP command -> its parser: what :mod:`harness.machinestate.capture` asks QEMU for."""


def parse(texts: Mapping[str, str], side: str) -> MachineState:
    """One QEMU's state from the text of each command of :data:`PARSERS` it printed."""
    missing = [c for c in PARSERS if c not in texts]
    if missing:
        raise MachineStateError(", ".join(missing), f"no output of {missing} for {side}")
    components = tuple(c for command, text in texts.items() for c in PARSERS[command](text))
    return MachineState(side, components, texts)
