"""Shared fixtures for namespace/SSH host tests: real namespaces, sshd and paramiko."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.builds.debian import ensure_suite_root
from harness.builds.model import Build
from harness.hosts.setns import list_namespaces, netns_pids

QEMU = "/usr/bin/qemu-system-ppc64"


@pytest.fixture(scope="session", autouse=True)
def _needs_namespaces() -> None:
    """Every test here makes real namespaces: skip, with the reason, where that is impossible."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and bwrap as root need root")
    if shutil.which("ip") is None or shutil.which("bwrap") is None:
        pytest.skip("needs iproute2 and bubblewrap (make setup)")


@pytest.fixture(scope="session")
def trixie_root() -> Path:
    return ensure_suite_root("trixie")


@pytest.fixture(scope="session")
def trixie(trixie_root: Path) -> Build:
    return Build("trixie", trixie_root, QEMU)


@pytest.fixture
def rundir() -> Iterator[Path]:
    """A cell-like run directory in /tmp (unix socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="gm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


Leftovers = Callable[[list[str], list[str], list[Path]], list[str]]


@pytest.fixture
def leftovers() -> Leftovers:
    return find_leftovers


def find_leftovers(names: list[str], needles: list[str], gone: list[Path]) -> list[str]:
    """What is left: namespaces ``names``, processes and mounts mentioning ``needles``
    (or ``names``), and paths of ``gone`` that still exist."""
    found = [f"namespace {n}" for n in names if n in list_namespaces()]
    needles = [*names, *needles]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found.append(f"process {entry}: {cmdline[:200]}")
    for line in Path("/proc/mounts").read_text().splitlines():
        if any(n in line for n in needles):
            found.append(f"mount {line}")
    found += [f"path {p}" for p in gone if p.exists()]
    return found


Commands = Callable[[str], list[str]]


@pytest.fixture
def commands() -> Commands:
    return commands_in


def commands_in(netns: str) -> list[str]:
    """Command lines of the processes in a namespace (those that exit meanwhile are skipped)."""
    found = []
    for pid in netns_pids(netns):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found
