"""The parser on real text of each build: every CPU with its registers, the interrupt
controller (XICS or XIVE) and PCI; and refusal, naming the line, of what it cannot read.

Fixtures (fixtures/<build>-<ic mode>-<side>.txt) are what ``capture`` kept of a real hop of
the golden guest on 2 CPUs, pseries-7.2 (5.2: pseries-5.2), TCG: the source at its stop and
the destination as loaded, held paused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.machinestate import (
    MachineStateError,
    compare,
    parse,
    parse_pci,
    parse_pic,
    parse_registers,
)
from harness.machinestate.parse import PARSERS

FIXTURES = Path(__file__).parent / "fixtures"
BUILDS = ("5.2", "7.2", "10.0")
MODES = ("xics", "xive")


def _texts(name: str) -> dict[str, str]:
    """The ``### <command>`` sections of an evidence file."""
    texts: dict[str, str] = {}
    command = None
    for line in (FIXTURES / name).read_text().splitlines(keepends=True):
        if line.startswith("### "):
            command = line[4:].strip()
            texts[command] = ""
        elif command is not None:
            texts[command] += line
    return texts


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("side", ["src", "dst"])
def test_every_fixture_parses_whole(build: str, mode: str, side: str) -> None:
    state = parse(_texts(f"{build}-{mode}-{side}.txt"), side)
    names = state.names
    assert names[:2] == ("CPU 0", "CPU 1")
    cpu = state["CPU 1"]
    for register in ("NIP", "MSR", "TB", "TBU", "DECR", "GPR00", "GPR31", "FPR31", "CR", "RES",
                     "SRR0", "SRR1", "PVR", "SPRG7", "HSRR1", "CFAR", "LPCR", "PTCR", "DAR", "DSISR"):
        assert register in cpu.fields, register
    assert len([f for f in cpu.fields if f.startswith("GPR")]) == 32
    if mode == "xics":
        assert {"ICP 0", "ICP 1", "ICS", "ICS source 1000"} <= set(names)
        assert state["ICP 0"].fields.keys() == {"XIRR", "PP", "MFRR"}
    else:
        assert {"TCTX 0", "TCTX 1", "XIVE source 00001000"} <= set(names)
        assert state["TCTX 1"]["OS CPPR"] == "ff"
    assert state["irqchip"]["mode"] == "emulated"
    assert state["PCI 00:00.0"]["id"] == ""  # virtio-rng-pci, no id given


def test_registers_of_one_cpu_as_qemu_prints_them() -> None:
    cpu = parse_registers(_texts("7.2-xive-src.txt")["info registers -a"])[0]
    assert cpu.name == "CPU 0"
    assert cpu["NIP"] == "c0000000000e1230" and cpu["MSR"] == "800000000280b033"
    assert (cpu["TBU"], cpu["TB"]) == ("00000001", str(int(cpu["TB"])))
    assert cpu["RES"] == "ffffffffffffffff" and "RES length" not in cpu.fields
    assert cpu["XER"] and cpu["HF"] and cpu["iidx"] == "1"


def test_ten_prints_the_reservation_length() -> None:
    cpu = parse_registers(_texts("10.0-xive-src.txt")["info registers -a"])[0]
    assert (cpu["RES length"], cpu["RES"]) == ("004", "ffffffffffffffff")


def test_xics_leaves_host_pointers_out() -> None:
    text = _texts("7.2-xics-src.txt")["info pic"]
    assert "0x" in text  # QEMU printed the ICS object's address
    components = parse_pic(text)
    assert not any("0x" in v for c in components for v in c.fields.values())
    assert {c.name: dict(c.fields) for c in components}["ICS"] == {"range": "1000..1fff"}


def test_xive_source_with_its_end_and_a_masked_one() -> None:
    sources = {c.name: c for c in parse_pic(_texts("10.0-xive-src.txt")["info pic"])}
    active = sources["XIVE source 00001000"]
    assert (active["type"], active["PQ"], active["masked"], active["target"], active["priority"]) == \
        ("MSI", "--", "no", "0", "6")
    assert active["EQ entries"] == "16384" and active["EQ tail"].count("^") == 1
    masked = sources["XIVE source 00001200"]
    assert (masked["type"], masked["PQ"], masked["masked"]) == ("LSI", "-Q", "yes")
    assert "target" not in masked.fields


def test_pci_device_fields() -> None:
    [device] = parse_pci(_texts("7.2-xive-src.txt")["info pci"])
    assert device.name == "PCI 00:00.0"
    assert device["id"] == "" and device["IRQ"] == "0" and device["pin"] == "A"
    assert "BAR0" in device.fields and "class" in device.fields


def test_an_unmapped_bar_reads_the_same_from_every_build() -> None:
    """7.2 and 5.2 print an unassigned BAR at address all ones with its end, 10.0 as not mapped:
    the same state, so a 7.2 to 10.0 hop compares equal there (and a mapped BAR keeps its
    address)."""
    bars = {build: parse_pci(_texts(f"{build}-xics-src.txt")["info pci"])[0].fields
            for build in ("7.2", "10.0")}
    assert bars["7.2"]["BAR0"] == bars["10.0"]["BAR0"] == "I/O (not mapped)"
    assert bars["7.2"]["BAR1"] == bars["10.0"]["BAR1"] == "32 bit memory (not mapped)"
    assert bars["7.2"]["BAR4"] == bars["10.0"]["BAR4"] == "64 bit prefetchable memory (not mapped)"
    [mapped] = parse_pci("Bus  0, device   0, function 0:\n      BAR1: 32 bit memory at 0x200000000 "
                         "[0x200000fff].\n")
    assert mapped["BAR1"] == "32 bit memory at 0x200000000 [0x200000fff]"


def test_the_same_hop_read_twice_has_no_difference() -> None:
    for build in BUILDS:
        state = parse(_texts(f"{build}-xive-src.txt"), "source")
        assert compare(state, state) == []


@pytest.mark.parametrize(("command", "text", "named"), [
    ("info registers -a", "", "no CPU#n header"),
    ("info registers -a", "NIP c000 LR c001\n", "before any CPU#n"),
    ("info registers -a", "CPU#0\nNIP c000 LR\n", "LR followed by 0 values"),
    ("info registers -a", "CPU#0\nNIP c000 NIP c001\n", "NIP printed twice"),
    ("info registers -a", "CPU#0\nNIP zz!\n", "'zz!'"),
    ("info pic", "", "no interrupt controller state"),
    ("info pic", "CPU 0 XIRR=00000000 ((nil)) PP=ff MFRR=ff\nsomething new\n", "something new"),
    ("info pic", "CPU[0000]: OS 00 ff\n", "without a matching QW header"),
    ("info pci", "    IRQ 0, pin A\n", "before any Bus"),
    ("info pci", "  Bus  0, device   0, function 0:\n      a new line\n", "a new line"),
])
def test_unknown_text_is_an_error_naming_it(command: str, text: str, named: str) -> None:
    with pytest.raises(MachineStateError, match=named.replace("(", r"\(").replace("[", r"\[")) as err:
        PARSERS[command](text)
    assert err.value.command == command


def test_a_missing_command_is_an_error() -> None:
    texts = _texts("7.2-xive-src.txt")
    del texts["info pic"]
    with pytest.raises(MachineStateError, match="no output of"):
        parse(texts, "source")
