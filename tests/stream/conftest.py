"""Fixtures for the stream tests: real streams from real QEMU builds (cached), and QEMU's scripts.

Streams come from :mod:`harness.stream.corpus` and are cached under
``~/.cache/goldmig/streams/``; the first run makes them (about a second per
stopped machine, ten per booted guest, plus debootstrap of missing roots).
A missing environment (no network for debootstrap or apt, no bubblewrap)
skips the tests that need it, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from harness.errors import BuildError, HostError
from harness.stream import corpus
from harness.stream.peer import PeerError, PeerScripts, ensure_peer_scripts
from harness.stream.recorder import RecordedStream


@contextmanager
def _environment(what: str) -> Iterator[None]:
    """Skip (not fail) when the machine lacks what the test needs; QEMU misbehaving still fails."""
    try:
        yield
    except (BuildError, HostError, PeerError) as exc:
        pytest.skip(f"{what} unavailable: {exc}")
    except Exception as exc:
        if type(exc).__name__ == "GuestImageError":
            pytest.skip(f"{what} unavailable: {exc}")
        raise


@pytest.fixture(scope="session")
def peer() -> PeerScripts:
    with _environment("QEMU's scripts from Debian's trixie source package"):
        return ensure_peer_scripts()
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def stopped() -> Callable[..., RecordedStream]:
    """``stopped(label, ic_mode, **kw)``: a stream of a stopped (-S) machine."""
    made: dict[tuple[Any, ...], RecordedStream] = {}

    def get(label: str, ic_mode: str | None = None, **kw: Any) -> RecordedStream:
        key = (label, ic_mode, tuple(sorted(kw.items())))
        if key not in made:
            with _environment(f"QEMU {label}"):
                made[key] = corpus.stopped_stream(label, ic_mode, **kw)
        return made[key]

    return get


@pytest.fixture(scope="session")
def running() -> Callable[..., RecordedStream]:
    """``running(label, ic_mode, **kw)``: a stream of a booted golden guest."""
    made: dict[tuple[Any, ...], RecordedStream] = {}

    def get(label: str, ic_mode: str = "dual", **kw: Any) -> RecordedStream:
        key = (label, ic_mode, tuple(sorted(kw.items())))
        if key not in made:
            with _environment(f"QEMU {label} with the golden guest"):
                made[key] = corpus.running_stream(label, ic_mode, **kw)
        return made[key]

    return get
