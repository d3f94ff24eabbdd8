"""What a path build reads from this machine, so a host's view of the filesystem can show it.

A namespace host's view of this machine has a /tmp and /run of its own, so a
developer's build tree there (or anywhere a view leaves out) is invisible to
it unless bound in. A build needs, besides the binary itself:

* the binary's directory: a QEMU build tree runs ``qemu-system-ppc64`` from
  the build directory and loads its modules (``hw-*.so``) from the same place;
* its firmware directory, and wherever that directory's symlinks point (a
  build tree's ``pc-bios/*.bin`` are symlinks into the source tree);
* the directories of the shared libraries it links (an rpath into a private
  prefix).

Directories under /usr are left out: every view of this machine shows /usr as
it is, and it holds the system's own libraries (merged /usr) and, for a build
that uses them, the distribution's firmware blobs (/usr/share/qemu).

Paths are real paths (symlinks resolved): a view is made of bind mounts, and
a symlink on the way to a bound directory would lead out of it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from harness.errors import BuildError

SYSTEM = Path("/usr")
_LDD_PATH = re.compile(r"^\s*(?:\S+ => )?(/.*) \(0x[0-9a-f]+\)$")
"""``libz.so.1 => /usr/lib/libz.so.1 (0x...)``, or the loader's ``/lib64/ld-linux... (0x...)``."""


def own_dirs(binary: Path, firmware: Path) -> tuple[Path, ...]:
    """The directories ``binary`` and ``firmware`` (both real paths) need visible, outermost only."""
    dirs = [binary.parent, firmware]
    dirs += [Path(os.path.realpath(link)).parent for link in _symlinks(firmware) if link.exists()]
    dirs += [lib.parent for lib in linked_libraries(binary)]
    return outermost(d for d in dirs if not d.is_relative_to(SYSTEM))


def linked_libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads (real paths), as ``ldd`` resolves them here.

    A binary ``ldd`` cannot read (a script, a static build) links nothing; a
    library it cannot find is left to the binary itself to report when it starts.
    """
    try:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"cannot list the libraries of {binary} with ldd: {exc}") from exc
    if proc.returncode != 0:
        return []
    found = (_LDD_PATH.match(line) for line in proc.stdout.splitlines())
    return [Path(os.path.realpath(m[1])) for m in found if m]


def outermost(dirs: Iterable[Path]) -> tuple[Path, ...]:
    """``dirs`` without duplicates and without those inside another of them, sorted."""
    unique = sorted(set(dirs))
    return tuple(d for d in unique if not any(d != o and d.is_relative_to(o) for o in unique))


def _symlinks(directory: Path) -> list[Path]:
    with os.scandir(directory) as scan:
        return [Path(entry.path) for entry in scan if entry.is_symlink()]
