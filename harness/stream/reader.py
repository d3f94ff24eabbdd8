"""A bounded, offset-tracking reader over a migration stream.

The stream is seen through a window of at most ``window`` bytes mapped from
the file (mmap, read-only), moved forward as parsing goes; skipping RAM page
contents only moves an index, so page data is never copied and the process's
memory does not grow with the stream. Input that cannot be mapped (a pipe, a
BytesIO) is first spooled to an unnamed temporary file, in bounded chunks.

Every read past the end raises :class:`StreamError` with the offset and the
``context`` the parser set (which section it is in).
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import re
import stat
import struct
from collections.abc import Iterator
from typing import BinaryIO

from harness.stream.errors import StreamError

StreamSource = str | os.PathLike[str] | BinaryIO

DEFAULT_WINDOW = 8 << 20
_GRANULARITY = mmap.ALLOCATIONGRANULARITY
_SCAN_CHUNK = 1 << 20

_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")


class StreamReader:
    """Sequential big-endian reads with absolute offsets, over a moving mmap window.

    Fast decoders may use ``buf``/``pos``/``limit`` directly (``buf[pos]`` is
    the byte at ``tell()``); they must call :meth:`need` before reading past
    ``limit`` and re-read ``buf`` afterwards, since it may be remapped.
    """

    def __init__(self, fileobj: BinaryIO, name: str, window: int = DEFAULT_WINDOW) -> None:
        self.name = name
        self.context = "stream header"
        self._fd = fileobj.fileno()
        self.size = os.fstat(self._fd).st_size
        self._window = max(window, _GRANULARITY)
        self.buf: mmap.mmap | bytes = b""
        self.base = 0
        self.pos = 0
        self.limit = 0

    # -- position -----------------------------------------------------------

    def tell(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int:
        return self.size - self.base - self.pos

    def at_end(self) -> bool:
        return self.base + self.pos >= self.size

    def seek(self, offset: int) -> None:
        """Move to absolute ``offset`` (at most the end of the stream)."""
        if not 0 <= offset <= self.size:
            raise self.error(f"seek to {offset} outside the stream of {self.size} bytes")
        if self.base <= offset <= self.base + self.limit:
            self.pos = offset - self.base
        else:
            self._map(offset, 0)

    def need(self, n: int) -> None:
        """Make ``n`` bytes from the current position available in ``buf``."""
        if self.pos + n <= self.limit:
            return
        here = self.base + self.pos
        if here + n > self.size:
            raise self.error(
                f"stream ends after {self.size - here} of {n} bytes needed", offset=self.size
            )
        self._map(here, n)

    def _map(self, offset: int, n: int) -> None:
        start = offset - offset % _GRANULARITY
        length = min(max(self._window, offset - start + n), self.size - start)
        old = self.buf
        if length > 0:
            new = mmap.mmap(self._fd, length, access=mmap.ACCESS_READ, offset=start)
            with contextlib.suppress(AttributeError, OSError):
                new.madvise(mmap.MADV_SEQUENTIAL)
            self.buf = new
        else:
            self.buf = b""
        if isinstance(old, mmap.mmap):
            old.close()
        self.base, self.pos, self.limit = start, offset - start, length

    # -- reads ----------------------------------------------------------------

    def u8(self) -> int:
        if self.pos >= self.limit:
            self.need(1)
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        self.need(2)
        (value,) = _BE16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(value)

    def u32(self) -> int:
        self.need(4)
        (value,) = _BE32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        self.need(8)
        (value,) = _BE64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(value)

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes (callers bound ``n``: this copies)."""
        self.need(n)
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        """Step over ``n`` bytes without reading them."""
        if n < 0:
            raise self.error(f"negative length {n}")
        if self.pos + n <= self.limit:
            self.pos += n
            return
        here = self.base + self.pos
        if here + n > self.size:
            raise self.error(
                f"stream ends after {self.size - here} of {n} bytes to skip", offset=self.size
            )
        self._map(here + n, 0)

    def peek_u8(self) -> int | None:
        """The next byte without consuming it, or None at the end."""
        if self.pos < self.limit:
            return self.buf[self.pos]
        if self.at_end():
            return None
        self.need(1)
        return self.buf[self.pos]

    def peek_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at absolute ``offset``, without moving (short at the end)."""
        if self.base <= offset and offset + n <= self.base + self.limit:
            return bytes(self.buf[offset - self.base : offset - self.base + n])
        if offset < 0 or offset >= self.size or n <= 0:
            return b""
        return os.pread(self._fd, min(n, self.size - offset), offset)

    def finditer(self, pattern: re.Pattern[bytes], start: int, overlap: int) -> Iterator[int]:
        """Absolute offsets of matches of ``pattern`` from ``start`` on, in order.

        Reads the file in bounded chunks that overlap by ``overlap`` bytes, so
        a match up to that long is found even across a chunk boundary.
        """
        at = start
        while at < self.size:
            chunk = os.pread(self._fd, min(_SCAN_CHUNK + overlap, self.size - at), at)
            last = at + len(chunk) >= self.size
            cut = len(chunk) if last else _SCAN_CHUNK
            for match in pattern.finditer(chunk):
                if match.start() >= cut:
                    break
                yield at + match.start()
            if last:
                return
            at += _SCAN_CHUNK

    def error(self, reason: str, offset: int | None = None) -> StreamError:
        """A :class:`StreamError` at ``offset`` (default: here) in the current context."""
        return StreamError(reason, self.tell() if offset is None else offset, self.context, self.name)

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        self.buf, self.base, self.pos, self.limit = b"", 0, 0, 0


@contextlib.contextmanager
def open_stream(source: StreamSource, window: int = DEFAULT_WINDOW) -> Iterator[StreamReader]:
    """A :class:`StreamReader` over a path or a binary file object, closed afterwards."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            fileobj = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise StreamError(f"cannot open: {exc.strerror}", 0, "stream header", path) from exc
        with fileobj:
            reader = StreamReader(fileobj, path, window)
            try:
                yield reader
            finally:
                reader.close()
        return
    name = str(getattr(source, "name", "<stream>"))
    if _mappable(source):
        reader = StreamReader(source, name, window)
        try:
            yield reader
        finally:
            reader.close()
        return
    import shutil  # only needed for unmappable input
    import tempfile

    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(source, spool, _SCAN_CHUNK)
        spool.flush()
        reader = StreamReader(spool, name, window)
        try:
            yield reader
        finally:
            reader.close()


def _mappable(fileobj: BinaryIO) -> bool:
    """A regular file read from its start (mmap needs a real, seekable file)."""
    try:
        fd = fileobj.fileno()
        return stat.S_ISREG(os.fstat(fd).st_mode) and fileobj.tell() == 0
    except (OSError, io.UnsupportedOperation, AttributeError):
        return False
