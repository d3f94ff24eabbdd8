"""Shrink a crashing input while it still crashes at the same site (for regression tests)."""

from __future__ import annotations

from collections.abc import Callable


def minimise(data: bytes, fails: Callable[[bytes], bool]) -> bytes:
    """The smallest ``data`` found by removing ever smaller chunks while ``fails`` holds.

    Then each remaining byte is tried as zero, to leave only the bytes that matter.
    """
    chunk = max(1, len(data) // 2)
    while True:
        at, changed = 0, False
        while at < len(data):
            candidate = data[:at] + data[at + chunk :]
            if fails(candidate):
                data, changed = candidate, True
            else:
                at += chunk
        if chunk == 1 and not changed:
            break
        if not changed:
            chunk = max(1, chunk // 2)
    for at in range(len(data)):
        if data[at]:
            candidate = data[:at] + b"\0" + data[at + 1 :]
            if fails(candidate):
                data = candidate
    return data
