"""The one error of the stream layer.

Every way a migration stream can be unreadable (truncated, corrupted, a
format this parser does not know) ends in :class:`StreamError`, which names
the byte offset and the part of the stream being read. It derives from
:class:`~harness.errors.HarnessError`: the parser cannot tell a bad recording
from a bad QEMU, so the caller that knows (the migration layer, comparing
with what the destination QEMU said) decides whether it is a product failure.
"""

from __future__ import annotations

from harness.errors import HarnessError


class StreamError(HarnessError):
    """A migration stream could not be read at ``offset`` while reading ``section``."""

    def __init__(self, reason: str, offset: int, section: str, source: str = "") -> None:
        self.reason = reason
        self.offset = offset
        self.section = section
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}offset {offset} (0x{offset:x}), in {section}: {reason}")
