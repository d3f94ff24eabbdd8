"""QEMU's last words in failure messages (harness/qemu/output.py)."""

from __future__ import annotations

from harness.qemu.output import exit_report, last_words

CHECKSTOP = """qemu-system-ppc64: warning: Machine type 'pseries-5.2' is deprecated
Entering checkstop state: machine check with MSR[ME]=0
NIP 0000000000017000   LR 000000001004497c CTR 800000000280e033 XER 00000000000000de CPU#1
MSR 8000000000008003 HID0 0000000000000000  HF 6c10002d iidx 3 didx 3
 CFAR 0000000010005c34
 LPCR 000000000253f408
 PTCR 0000000000000000   DAR 00007fffa773e6b8  DSISR 0000000000000000
"""


def test_the_last_lines_on_one_line() -> None:
    assert last_words("a\n\nb\nc\nd\n") == "b | c | d"
    assert last_words("") == "no output"


def test_a_checkstop_reason_above_the_register_dump_comes_first() -> None:
    said = last_words(CHECKSTOP)
    assert said.startswith("Entering checkstop state: machine check with MSR[ME]=0 | ... | ")
    assert said.endswith("DSISR 0000000000000000")
    report = exit_report("dst QEMU (qemu-10.0) exited with code 0", CHECKSTOP)
    assert report.splitlines()[0].startswith(
        "dst QEMU (qemu-10.0) exited with code 0: Entering checkstop state: machine check with MSR[ME]=0")


def test_a_reason_among_the_last_lines_is_not_repeated() -> None:
    assert last_words("x\nEntering checkstop state: y\nz\n") == "x | Entering checkstop state: y | z"
