"""Writing a register of a paused guest through QEMU's gdbstub: the fault a non-vacuity test
injects into a migrated machine (a destination whose state differs from its source's).

The GDB remote protocol over a unix socket QEMU opens on request (HMP ``gdbserver``). 'P'
(write one register) is answered once the target description was read, as gdb does; 'g'
(read all) is avoided: QEMU 7.2 aborts on it for ppc64 (gdbstub.c handle_read_all_regs).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.runner.side import Side


def write_register(side: Side, gdb: Path, thread: int, register: int, value: str) -> None:
    """Set ``register`` (GDB's number) of vCPU ``thread`` (1 for CPU 0) to ``value`` (hex bytes
    in the target's order), through a gdbstub opened on ``gdb`` and closed afterwards."""
    hmp = "human-monitor-command"
    side.monitor.cmd(hmp, **{"command-line": f"gdbserver unix:{gdb},server=on,wait=off"})  # type: ignore[arg-type]
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(gdb))
            _expect(sock, f"Hg{thread}", "OK")
            if not packet(sock, "qXfer:features:read:target.xml:0,ffb").startswith(("l", "m")):
                raise ConnectionError("the gdbstub gave no target description")
            _expect(sock, f"P{register:x}={value}", "OK")
    finally:
        side.monitor.cmd(hmp, **{"command-line": "gdbserver none"})  # type: ignore[arg-type]


def _expect(sock: socket.socket, payload: str, reply: str) -> None:
    got = packet(sock, payload)
    if got != reply:
        raise ConnectionError(f"gdbstub answered {got!r} to {payload!r}, not {reply!r}")


def packet(sock: socket.socket, payload: str) -> str:
    """One GDB remote-protocol packet, acknowledged; its reply's payload."""
    sock.sendall(f"${payload}#{sum(payload.encode()) % 256:02x}".encode())
    data = b""
    while b"$" not in data or b"#" not in data[data.index(b"$"):] or \
            len(data) < data.index(b"#", data.index(b"$")) + 3:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"gdbstub closed after {payload!r}: {data!r}")
        data += chunk
    sock.sendall(b"+")
    start = data.index(b"$") + 1
    return data[start:data.index(b"#", start)].decode()
