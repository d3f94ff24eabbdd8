"""What the ``spapr`` machine section says: timebase, capabilities, CAS options.

* ``tb`` is ``vmstate_ppc_timebase`` (hw/ppc/ppc.c): guest_timebase (u64,
  the guest's TB at save), time_of_the_day_ns (i64, host wall clock then).
* ``spapr/cap/<name>`` subsections (hw/ppc/spapr_caps.c SPAPR_CAP_MIG_STATE)
  carry one u8 each, sent only for caps set on the command line to a
  non-default value; the destination refuses a cap higher than its own
  (spapr_caps_post_migration).
* ``spapr_option_vector_ov5_cas`` carries the option vector 5 bits both
  sides agreed at CAS (spapr_hcall.c h_client_architecture_support), as a
  ``bitmap`` of be64 words, bit ``OV_BIT(byte, bit) = (byte - 1) * 8 + bit``
  (include/hw/ppc/spapr_ovec.h). XIVE_EXPLOIT set means the guest uses XIVE
  (spapr_irq.c spapr_irq_update_active_intc); clear means XICS; an empty
  vector means no CAS happened yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.stream.values import IntArray, StructValue


def _ov_bit(byte: int, bit: int) -> int:
    return (byte - 1) * 8 + bit


OV5_OPTIONS: dict[str, int] = {
    "DRCONF_MEMORY": _ov_bit(2, 2),
    "FORM1_AFFINITY": _ov_bit(5, 0),
    "FORM2_AFFINITY": _ov_bit(5, 2),
    "HP_EVT": _ov_bit(6, 5),
    "HPT_RESIZE": _ov_bit(6, 7),
    "DRMEM_V2": _ov_bit(22, 0),
    "XIVE_BOTH": _ov_bit(23, 0),
    "XIVE_EXPLOIT": _ov_bit(23, 1),
    "MMU_BOTH": _ov_bit(24, 0),
    "MMU_RADIX_300": _ov_bit(24, 1),
    "MMU_RADIX_GTSE": _ov_bit(26, 1),
}

# Level names of string caps (spapr_caps.c cap_*_possible); bool caps are off/on.
_LEVELS: dict[str, tuple[str, ...]] = {
    "cfpc": ("broken", "workaround", "fixed"),
    "sbbc": ("broken", "workaround", "fixed"),
    "ibs": ("broken", "workaround", "fixed-ibs", "fixed-ccd", "fixed-na"),
}

SPAPR_IDSTR = "spapr"
CAS_SUBSECTION = "spapr_option_vector_ov5_cas"
DTB_SUBSECTION = "spapr_dtb"
CAP_PREFIX = "spapr/cap/"


@dataclass(frozen=True, slots=True)
class Timebase:
    guest_timebase: int
    time_of_the_day_ns: int


@dataclass(frozen=True, slots=True)
class SpaprCap:
    """A capability that travelled: its name, level, and what the level means."""

    name: str
    level: int
    meaning: str


@dataclass(frozen=True, slots=True)
class CasOptions:
    """The CAS-negotiated option vector 5."""

    bits: tuple[int, ...]
    options: tuple[str, ...]

    @property
    def negotiated(self) -> bool:
        return bool(self.bits)

    @property
    def interrupt_controller(self) -> str:
        """``XIVE``, ``XICS``, or ``none`` (no CAS yet: QEMU then follows ic-mode)."""
        if not self.bits:
            return "none"
        return "XIVE" if "XIVE_EXPLOIT" in self.options else "XICS"

    @property
    def mmu(self) -> str:
        if not self.bits:
            return "none"
        return "radix" if "MMU_RADIX_300" in self.options else "hash"


def timebase(state: StructValue) -> Timebase | None:
    tb = state.find("tb")
    if tb is None or not isinstance(tb.value, StructValue):
        return None
    guest = tb.value.find("guest_timebase")
    tod = tb.value.find("time_of_the_day_ns")
    if guest is None or tod is None or not isinstance(guest.value, int) or not isinstance(tod.value, int):
        return None
    return Timebase(guest.value, tod.value)


def caps(state: StructValue) -> tuple[SpaprCap, ...]:
    out = []
    for sub in state.subsections:
        if not sub.name.startswith(CAP_PREFIX) or not sub.state.fields:
            continue
        name = sub.name[len(CAP_PREFIX) :]
        level = sub.state.fields[0].value
        if not isinstance(level, int):
            continue
        out.append(SpaprCap(name, level, _meaning(name, level)))
    return tuple(out)


def _meaning(name: str, level: int) -> str:
    if name in _LEVELS:
        names = _LEVELS[name]
        return names[level] if level < len(names) else f"level {level}"
    if name == "hpt_maxpagesize":
        return f"2^{level} bytes"
    return {0: "off", 1: "on"}.get(level, f"level {level}")


def cas_options(state: StructValue) -> CasOptions | None:
    sub = state.subsection(CAS_SUBSECTION)
    if sub is None:
        return None
    ov5 = sub.state.find("ov5_cas")
    if ov5 is None or not isinstance(ov5.value, StructValue):
        return None
    bitmap = ov5.value.find("bitmap")
    if bitmap is None:
        return None
    raw = bitmap.value
    if isinstance(raw, IntArray):
        raw = raw.data
    if not isinstance(raw, bytes):
        return None
    bits = bitmap_bits(raw)
    names = tuple(name for name, bit in OV5_OPTIONS.items() if bit in bits)
    return CasOptions(bits, names)


def bitmap_bits(raw: bytes) -> tuple[int, ...]:
    """Set bit numbers of a VMSTATE_BITMAP (vmstate-types.c put_bitmap: be64 words, LSB first)."""
    bits = []
    for w in range(len(raw) // 8):
        word = int.from_bytes(raw[w * 8 : w * 8 + 8], "big")
        while word:
            low = word & -word
            bits.append(w * 64 + low.bit_length() - 1)
            word ^= low
    return tuple(bits)


def dtb_blob(state: StructValue) -> bytes | None:
    sub = state.subsection(DTB_SUBSECTION)
    if sub is None:
        return None
    blob = sub.state.find("fdt_blob")
    return blob.value if blob is not None and isinstance(blob.value, bytes) else None
