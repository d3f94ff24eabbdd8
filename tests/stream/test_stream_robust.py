"""Damaged input ends in a summary or a StreamError with an offset, never anything else, and soon.

Hypothesis truncates, bit-flips, splices and invents streams; each must be
summarised (and rendered) or refused with a StreamError naming an offset
inside the input and the part being read, within a time bound (an alarm
turns a hang into a failure).
"""

from __future__ import annotations

import contextlib
import io
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamgen import full_stream

from harness.stream.errors import StreamError
from harness.stream.recorder import RecordedStream
from harness.stream.summary import summarise

TIME_BOUND_S = 10.0
HEADER = b"QEVM\x00\x00\x00\x03"


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"no result within {seconds}s: the parser hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def ends_well(data: bytes) -> None:
    """A summary (that renders), or one StreamError inside the input, in bounded time."""
    start = time.monotonic()
    with alarm(TIME_BOUND_S * 2):
        try:
            result = summarise(io.BytesIO(data))
        except StreamError as exc:
            assert 0 <= exc.offset <= len(data), exc
            assert exc.section and exc.reason
        else:
            result.to_text()
            result.to_json()
    assert time.monotonic() - start < TIME_BOUND_S


def flipped(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, bit in flips:
        out[position % len(out)] ^= 1 << bit
    return bytes(out)


SYNTHETIC = full_stream()
SYNTHETIC_NO_VMDESC = full_stream(footers=False, with_vmdesc=False)
fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestSynthetic:
    @fast
    @given(cut=st.integers(0, len(SYNTHETIC)))
    def test_truncated(self, cut: int) -> None:
        ends_well(SYNTHETIC[:cut])

    @fast
    @given(flips=st.lists(st.tuples(st.integers(0, len(SYNTHETIC) - 1), st.integers(0, 7)),
                          min_size=1, max_size=8))
    def test_bit_flipped(self, flips: list[tuple[int, int]]) -> None:
        ends_well(flipped(SYNTHETIC, flips))

    @fast
    @given(flips=st.lists(st.tuples(st.integers(0, len(SYNTHETIC_NO_VMDESC) - 1), st.integers(0, 7)),
                          min_size=1, max_size=4))
    def test_bit_flipped_without_vmdesc_or_footers(self, flips: list[tuple[int, int]]) -> None:
        ends_well(flipped(SYNTHETIC_NO_VMDESC, flips))

    @fast
    @given(at=st.integers(0, len(SYNTHETIC)), junk=st.binary(min_size=1, max_size=64))
    def test_spliced(self, at: int, junk: bytes) -> None:
        ends_well(SYNTHETIC[:at] + junk + SYNTHETIC[at + len(junk):])

    @fast
    @given(data=st.binary(max_size=2048))
    def test_random(self, data: bytes) -> None:
        ends_well(data)

    @fast
    @given(body=st.binary(max_size=2048))
    def test_random_after_a_valid_header(self, body: bytes) -> None:
        ends_well(HEADER + body)

    @fast
    @given(records=st.lists(st.sampled_from([
        b"\x01\x00\x00\x00\x02\x03ram\x00\x00\x00\x00\x00\x00\x00\x04",
        b"\x04\x00\x00\x00\x05\x03dev\x00\x00\x00\x00\x00\x00\x00\x01",
        b"\x02\x00\x00\x00\x02", b"\x7e\x00\x00\x00\x02", b"\x00\x00\x00\x00\x00\x00\x00\x10",
        b"\x08\x00\x02\x00\x04\x00\x00\x00\x01", b"\x00", b"\x05\x03dev\x00\x00\x00\x01",
    ]), max_size=30))
    def test_shuffled_records(self, records: list[bytes]) -> None:
        ends_well(HEADER + b"".join(records))


@pytest.fixture(scope="module")
def real(stopped: Callable[..., RecordedStream]) -> bytes:
    return stopped("7.2", "xive").path.read_bytes()


@pytest.mark.slow
class TestRealStream:
    """The same on a real QEMU 7.2 stream (XIVE, stopped machine, 3.8 MB)."""

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(fraction=st.floats(0, 1))
    def test_truncated(self, real: bytes, fraction: float) -> None:
        ends_well(real[: int(len(real) * fraction)])

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(flips=st.lists(st.tuples(st.integers(0, 2**32), st.integers(0, 7)), min_size=1, max_size=8))
    def test_bit_flipped(self, real: bytes, flips: list[tuple[int, int]]) -> None:
        ends_well(flipped(real, flips))

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(fraction=st.floats(0, 1), flips=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)),
                                                    min_size=1, max_size=3))
    def test_bit_flipped_in_device_sections(self, real: bytes, fraction: float,
                                            flips: list[tuple[int, int]]) -> None:
        """Flips among the device sections and the vmdesc (the last 2.3 MB, past the RAM)."""
        start = len(real) - 2_300_000
        at = start + int((len(real) - start - 8) * fraction)
        ends_well(flipped(real, [(at + p, b) for p, b in flips]))
