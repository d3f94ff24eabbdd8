"""Cached artifacts carry a content hash, checked on use.

An artifact is a file or a directory in the user's cache. Beside it,
``<name>.sums.json`` records the size and sha256 of the files that matter (a
file artifact itself; for a directory, the files its owner chose) and what the
artifact was made from (``meta``, for people). A sidecar is written to a temp
file and renamed; a file artifact is renamed into place after its sidecar,
under a lock, so no artifact is trusted without a sidecar that matches it.

- :func:`ensure_file`: a pure cache entry the harness can remake (a stream, a
  vmstate dump, an introspection result): made when missing, remade when it
  does not match its sidecar, with a one-line warning on stderr naming it.
- :func:`ensure_dir`: the same for a directory that its maker replaces whole
  (the golden image by build.py, QEMU's scripts from Debian), with the files
  that matter in it hashed.
- :func:`seal`, :func:`damage`: for a directory that must not be remade in
  place (a debootstrap root another run may be using): its owner refuses a
  damaged one with the command that clears it.

Checking hashes every recorded file (sha256: 35 ms per 50 MB on an idle core
here, 60-100 ms with the machine busy). A
file found intact is remembered for the rest of the process by its device,
inode, size, mtime and ctime: a write, truncation, or replacement through the
file system changes one of them, and ctime cannot be set back (``touch -r``
restores mtime but moves ctime), so within one process only damage below the
file system (the disk, a raw device write) goes unseen.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".sums.json"
_FORMAT = 1
_intact: set[tuple[object, ...]] = set()


def sums_path(artifact: Path) -> Path:
    """The sidecar of ``artifact``: ``<name>.sums.json`` beside it."""
    return artifact.with_name(artifact.name + SUFFIX)


def ensure_file(path: Path, make: Callable[[Path], object],
                meta: Mapping[str, object] | None = None) -> Path:
    """``path``, checked against its sidecar; made when missing and remade when damaged.

    ``make(part)`` writes the whole artifact to ``part``, a file beside ``path``
    that nothing else writes meanwhile (a per-artifact lock is held, so
    concurrent callers make it once); it then replaces ``path`` in one rename,
    so a reader that opened the old file keeps it. If ``make`` raises, a
    damaged ``path`` stays, and is found damaged again by the next use.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        if path.exists():
            why = damage(path)
            if why is None:
                return path
            warn(path, why)
        part = path.with_name(f".{path.name}.part")
        try:
            make(part)
            _write_sums(path, {".": _entry(part)}, meta)
            part.replace(path)
        finally:
            part.unlink(missing_ok=True)
    return path


def ensure_dir(directory: Path, files: Iterable[str], make: Callable[[Path], object]) -> Path:
    """``directory``, with ``files`` (relative to it) checked against its sidecar; made by
    ``make(directory)`` when missing, and again (with a warning naming it) when damaged.

    ``make`` must replace the directory as a whole (build beside it, then rename), so
    that a reader never sees half of it. A per-directory lock is held meanwhile.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    with locked(directory):
        why = damage(directory) if directory.exists() else None
        if why is not None:
            warn(directory, why)
        if why is not None or not directory.exists():
            make(directory)
            seal(directory, files)
    return directory


def seal(directory: Path, files: Iterable[str], meta: Mapping[str, object] | None = None) -> None:
    """Record the size and sha256 of ``files`` (paths relative to ``directory``) in its sidecar."""
    _write_sums(directory, {name: _entry(directory / name) for name in sorted(files)}, meta)


def damage(artifact: Path) -> str | None:
    """Why ``artifact`` does not match its sidecar (one line), or None when every recorded file does."""
    sums = sums_path(artifact)
    try:
        recorded = _read_sums(sums)
    except FileNotFoundError:
        return f"{sums.name} is missing (made before goldmig recorded hashes, or never finished)"
    except (OSError, ValueError) as exc:
        return f"{sums.name} is unreadable ({exc})"
    for name, (size, sha256) in recorded.items():
        why = _file_damage(artifact / name, size, sha256, sums.name)
        if why is not None:
            return why if name == "." else f"{name}: {why}"
    return None


def warn(artifact: Path, why: str) -> None:
    """One line on stderr: ``artifact``, why it cannot be trusted, and that it is being remade."""
    print(f"goldmig: cache: {artifact}: {why}; remaking it", file=sys.stderr, flush=True)


@contextmanager
def locked(artifact: Path) -> Iterator[None]:
    """An exclusive lock on ``artifact`` (``.locks/<name>.lock`` beside it), across processes."""
    locks = artifact.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{artifact.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """The hex sha256 of ``path``'s content."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _entry(path: Path) -> dict[str, object]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _write_sums(artifact: Path, files: Mapping[str, Mapping[str, object]],
                meta: Mapping[str, object] | None) -> None:
    sums = sums_path(artifact)
    part = sums.with_name(f".{sums.name}.{os.getpid()}.part")
    part.write_text(json.dumps({"format": _FORMAT, "files": files, "meta": dict(meta or {})},
                               indent=1, sort_keys=True) + "\n")
    part.replace(sums)


def _read_sums(sums: Path) -> dict[str, tuple[int, str]]:
    data = json.loads(sums.read_text())
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"not a format {_FORMAT} sidecar")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError("no files recorded")
    recorded = {}
    for name, entry in files.items():
        if not isinstance(entry, dict):
            raise ValueError(f"bad entry for {name!r}")
        size, sha256 = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or not isinstance(sha256, str):
            raise ValueError(f"bad entry for {name!r}")
        recorded[name] = (size, sha256)
    return recorded


def _file_damage(path: Path, size: int, sha256: str, sums_name: str) -> str | None:
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256)
    if key in _intact:
        return None
    if st.st_size != size:
        return f"size {st.st_size} bytes, but {sums_name} records {size} (truncated or overwritten)"
    got = sha256_file(path)
    if got != sha256:
        return f"sha256 {got[:16]}..., but {sums_name} records {sha256[:16]}... (its content changed)"
    _intact.add(key)
    return None
