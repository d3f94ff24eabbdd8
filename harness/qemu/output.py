"""What QEMU printed, for error messages: its last words on one line, first.

One-line summaries of a run (the goldmig summary, pytest's short summary,
Allure's list) show only an error's first line, so the reason QEMU gave for
dying must be on it, not only in its log.
"""

from __future__ import annotations

WORDS = 3
"""QEMU's last non-blank lines quoted on the first line (an error and its hint)."""
WORDS_CHARS = 400
TAIL_CHARS = 1500
"""The tail of QEMU's output given on the lines below."""


CAUSES = ("Entering checkstop state",)
"""How lines start that give the reason QEMU stops the guest, and that a register dump after them
pushes out of its last lines (target/ppc's powerpc_checkstop, then cpu_dump_state)."""


def last_words(output: str) -> str:
    """QEMU's last few non-blank output lines joined on one line, after the last line that gave a
    reason (:data:`CAUSES`) if that is further up; or "no output"."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    said = " | ".join(lines[-WORDS:])[-WORDS_CHARS:]
    cause = next((line for line in reversed(lines[:-WORDS]) if line.startswith(CAUSES)), None)
    if cause is not None:
        return f"{cause} | ... | {said}"
    return said or "no output"


def start_failure(who: str, exitcode: int | None, why: str, output: str) -> str:
    """The first line of a start-up failure: how ``who`` ended and what it said last.

    ``why`` (what the harness was waiting for) is given only while QEMU still
    runs: once it has exited, its exit and its words are the reason.
    """
    if exitcode is None:
        return f"{who} did not start: {why}; QEMU said: {last_words(output)}"
    how = f"exited with code {exitcode}" if exitcode >= 0 else f"was killed by signal {-exitcode}"
    return f"{who} {how} at start: {last_words(output)}"


def exit_report(head: str, output: str) -> str:
    """``head`` (how QEMU ended), its last words on the same line, then its output's tail."""
    return f"{head}: {last_words(output)}\n{output.strip()[-TAIL_CHARS:]}"
