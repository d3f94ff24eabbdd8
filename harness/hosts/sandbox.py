"""A read-only view of a build's root filesystem for bubblewrap, with host directories shared.

The cached root is shared by every worker and must stay pristine, so it is
never bound writable and no mount point is ever created inside it (bwrap 0.8,
Debian bookworm's, has no overlay support). Instead the sandbox's ``/`` is
bwrap's own tmpfs: each entry of the root is bound read-only (symlinks are
recreated), except along the path to a shared directory, where the
directories are recreated empty and only their other entries are bound.
``/dev``, ``/proc``, ``/tmp`` and ``/run`` are fresh. The mount namespace
dies with the sandbox's last process, so nothing stays mounted after a crash.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from harness.errors import HostError

FRESH = {"dev": ["--dev", "/dev"], "proc": ["--proc", "/proc"],
         "tmp": ["--tmpfs", "/tmp"], "run": ["--tmpfs", "/run"]}
"""Top-level directories made fresh in the sandbox instead of taken from the root."""
HIDDEN = {"sys"}


def root_view(root: Path, writable: Sequence[Path], readable: Sequence[Path],
              mounts: Sequence[tuple[Path, Path]] = ()) -> list[str]:
    """bwrap arguments: ``root`` read-only as ``/``, ``writable``/``readable`` at their paths,
    and each ``(host dir, path)`` of ``mounts`` writable at that path (a daemon's private state
    where its root expects it, e.g. ``/var/lib/libvirt``). A view with mounts also gets the
    host's ``/sys`` read-only: libvirtd reads the host's CPUs there to start QEMU."""
    shared = [(Path(p), "--bind", Path(p)) for p in writable]
    shared += [(Path(p), "--ro-bind", Path(p)) for p in readable]
    shared += [(Path(src), "--bind", Path(dest)) for src, dest in mounts]
    holes = []
    for path, _, dest in shared:
        if not path.is_absolute() or not path.is_dir() or not dest.is_absolute():
            raise HostError(f"shared directory {path} must be an existing absolute directory")
        rel = PurePosixPath(dest).relative_to("/")
        top = rel.parts[0] if rel.parts else ""
        if top in ("", "dev", "proc", *HIDDEN):
            raise HostError(f"cannot share {dest} with a sandbox: /{top} is the sandbox's own")
        if rel.parts[0] not in FRESH:
            holes.append(rel)
    args: list[str] = []
    _mirror(root, PurePosixPath(), holes, args)
    for fresh in FRESH.values():
        args += fresh
    if mounts:
        args += ["--ro-bind", "/sys", "/sys"]
    for path, how, dest in sorted(shared, key=lambda item: len(item[2].parts)):
        args += [how, str(path), str(dest)]
    return args


def _mirror(root: Path, rel: PurePosixPath, holes: list[PurePosixPath], args: list[str]) -> None:
    """Bind the entries of ``root/rel`` into ``/rel``, descending only towards ``holes``."""
    with os.scandir(root / rel) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        path = rel / entry.name
        dest = "/" + str(path)
        if not rel.parts and (entry.name in FRESH or entry.name in HIDDEN):
            continue
        below = [h for h in holes if h == path or path in h.parents]
        if entry.is_symlink():
            if below:
                raise HostError(f"shared directory /{below[0]} crosses symlink {dest} in {root}")
            args += ["--symlink", os.readlink(entry.path), dest]
        elif not below:
            args += ["--ro-bind", entry.path, dest]
        elif path in below:
            continue  # the shared directory itself is bound over it afterwards
        elif entry.is_dir(follow_symlinks=False):
            mode = entry.stat(follow_symlinks=False).st_mode & 0o7777
            args += ["--perms", f"{mode:04o}", "--dir", dest]
            _mirror(root, path, below, args)
        else:
            raise HostError(f"shared directory /{below[0]} crosses file {dest} in {root}")
