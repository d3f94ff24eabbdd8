"""Building QEMU from a source tree: copy it, apply the patches, configure, build with ninja.

A build is cached under ``~/.cache/goldmig/source-builds/<key>``, the key made of the
tree's state (a git checkout's commit and uncommitted changes; otherwise every file's
path, size and mtime), the patches' content and the configure line: a second use is a
lookup. The work happens in a copy of the tree kept per tree and configure line
(``source-work/<slot>``) and refreshed file by file, so that ninja (and ccache, when
installed) rebuilds only what changed: a one-file change costs seconds, not a build.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.builds.model import Build
from harness.builds.tree import own_dirs
from harness.cache import damage, locked, seal, sha256_file
from harness.errors import BuildError
from harness.paths import cache_root

RECIPE = 1
"""Bump when the way a tree is built changes, so that older builds are not reused."""
DEFAULT_CONFIGURE = ("--target-list=ppc64-softmmu", "--without-default-features", "--enable-fdt=system",
                     "--disable-install-blobs", "--disable-docs")
"""What the golden guest needs and nothing else (no firmware blobs to install, no docs)."""
FIRMWARE = ("slof.bin", "vof.bin")
BINARY = "qemu-system-ppc64"
SKIPPED = frozenset({".git", "build"})
"""Top-level entries of a tree that are not its source: git's store, a build directory."""
BUILD_S = 3600.0
_ERROR = re.compile(r"^(?P<where>[^\s:]+:\d+)(?::\d+)?: (?:fatal )?error: (?P<what>.*)$")


@dataclass(frozen=True)
class SourceRecipe:
    name: str
    tree: Path
    patches: tuple[Path, ...]
    configure: tuple[str, ...]
    firmware: Path | None


def built(recipe: SourceRecipe) -> Build:
    """The recipe's QEMU, from the cache or built now; a BuildError saying what failed (the
    compiler's first error, the patch and hunk that do not apply), with the log kept."""
    tree, configure, out = _where(recipe)
    _firmware(recipe, tree)  # refused before a build, not after it
    if damage(out) is not None:
        with locked(out):
            if damage(out) is not None:
                _build(recipe, tree, configure, out)
    return _result(recipe, tree, out)


def cached(recipe: SourceRecipe) -> Build | None:
    """The recipe's QEMU if it is built and in the cache; nothing is built."""
    tree, _, out = _where(recipe)
    return _result(recipe, tree, out) if damage(out) is None else None


def _where(recipe: SourceRecipe) -> tuple[Path, tuple[str, ...], Path]:
    """The tree, the configure line and where the build is cached (its key)."""
    tree = _checked_tree(recipe)
    configure = _configure_line(recipe.configure)
    key = hashlib.sha256("\0".join([
        str(RECIPE), tree_state(tree), *(sha256_file(p) for p in recipe.patches), *configure,
    ]).encode()).hexdigest()[:16]
    return tree, configure, cache_root() / "source-builds" / key


def _result(recipe: SourceRecipe, tree: Path, out: Path) -> Build:
    firmware, firmware_from = _firmware(recipe, tree)
    return Build(recipe.name, Path("/"), str(out / BINARY), firmware_dir=str(firmware),
                 package=f"source build {out.name}, firmware from {firmware_from}",
                 own_dirs=own_dirs(out / BINARY, firmware))


def tree_state(tree: Path) -> str:
    """What identifies the tree's content: for a git checkout its commit and uncommitted
    changes (each changed file's size and mtime), otherwise every file's path, size and mtime."""
    if (tree / ".git").exists():
        head = git(tree, "rev-parse", "HEAD")
        changed = git(tree, "status", "--porcelain=v1", "--untracked-files=all")
        stats = [f"{line}|{_stat(tree / line[3:])}" for line in changed.splitlines()
                 if not line[3:].startswith("build/")]
        return hashlib.sha256("\n".join([head, *stats]).encode()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(_files(tree)):
        digest.update(f"{path}|{_stat(tree / path)}\n".encode())
    return digest.hexdigest()


def first_error(log: str, src: Path | None = None) -> str | None:
    """The compiler's first error as ``file:line: message`` (the file relative to ``src``, the
    tree's copy), else configure's first ERROR line."""
    for line in log.splitlines():
        if match := _ERROR.match(line.strip()):
            where = match["where"]
            if src is not None:
                where = os.path.relpath(os.path.normpath(os.path.join(src.parent / "build", where)), src) \
                    if not where.startswith("/") else os.path.relpath(where, src)
            return f"{where}: {match['what']}"
    return next((line.strip() for line in log.splitlines() if line.lstrip().startswith("ERROR:")), None)


def _checked_tree(recipe: SourceRecipe) -> Path:
    tree = recipe.tree.resolve()
    if not (tree / "configure").is_file():
        raise BuildError(f"build {recipe.name!r}: {recipe.tree} is not a QEMU source tree (no "
                         "configure script); fix `tree:` in matrix.yaml (goldmig patch: --tree)")
    for patch in recipe.patches:
        if not patch.is_file():
            raise BuildError(f"build {recipe.name!r}: patch {patch} does not exist; fix `patches:` "
                             "in matrix.yaml (goldmig patch: --series)")
    return tree


def _firmware(recipe: SourceRecipe, tree: Path) -> tuple[Path, str]:
    """Where SLOF and VOF come from: the tree's pc-bios when it has them, else ``firmware``."""
    if all((tree / "pc-bios" / f).is_file() for f in FIRMWARE):
        return tree / "pc-bios", f"the tree ({tree / 'pc-bios'})"
    if recipe.firmware is not None and all((recipe.firmware / f).is_file() for f in FIRMWARE):
        return recipe.firmware.resolve(), str(recipe.firmware)
    where = f"{recipe.firmware} has not both" if recipe.firmware else "no `firmware:` is given"
    raise BuildError(f"build {recipe.name!r}: the tree's pc-bios has no {' and '.join(FIRMWARE)} "
                     f"(a Debian +ds tree strips them) and {where}; set `firmware:` to a directory "
                     "that has them, e.g. a Debian QEMU's /usr/share/qemu of the same release")


def _configure_line(extra: tuple[str, ...]) -> tuple[str, ...]:
    line = [*DEFAULT_CONFIGURE, *extra]
    if shutil.which("ccache") and not any(a.startswith("--cc") for a in line):
        line.append("--cc=ccache gcc")
    return tuple(line)


def _build(recipe: SourceRecipe, tree: Path, configure: tuple[str, ...], out: Path) -> None:
    slot = hashlib.sha256("\0".join([str(tree), *configure]).encode()).hexdigest()[:12]
    work = cache_root() / "source-work" / slot
    log = work / "build.log"
    with locked(work):
        work.mkdir(parents=True, exist_ok=True)
        log.write_text(f"tree {tree}\npatches {' '.join(map(str, recipe.patches)) or 'none'}\n")
        _refresh(tree, work / "src")
        for patch in recipe.patches:
            _apply(recipe.name, patch, work / "src", log)
        _wheels(recipe.name, work / "src", log)
        build = work / "build"
        line = "\n".join(configure)
        if not (build / "build.ninja").is_file() or _read(work / "configure-line") != line:
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir()
            _run(recipe.name, ["../src/configure", *configure], build, log, "configure", work / "src")
            (work / "configure-line").write_text(line)
        _run(recipe.name, ["ninja", BINARY], build, log, "the build", work / "src")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / BINARY, out / BINARY)
        shutil.copy2(log, out / "build.log")
    seal(out, [BINARY], meta={"tree": str(tree), "patches": [str(p) for p in recipe.patches],
                              "configure": list(configure)})


def _refresh(tree: Path, copy: Path) -> None:
    """Make ``copy`` hold the tree's files: a file is rewritten only when its content differs
    (so it gets a new mtime and ninja rebuilds what uses it), and files the tree lacks go."""
    copy.mkdir(parents=True, exist_ok=True)
    wanted = set(_files(tree))
    for path in wanted:
        src, dst = tree / path, copy / path
        if src.is_symlink():
            if dst.is_symlink() and os.readlink(dst) == os.readlink(src):
                continue
        elif dst.is_file() and not dst.is_symlink() and filecmp.cmp(src, dst, shallow=False):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        shutil.copy2(src, dst, follow_symlinks=False)
        if not src.is_symlink():
            os.utime(dst)  # now: whatever was built from the old content is older than this
    for path in set(_files(copy)) - wanted:
        (copy / path).unlink()


def _wheels(name: str, src: Path, log: Path) -> None:
    """The Python wheels configure installs offline (pythondeps.toml's ``meson`` group: meson,
    and pycotap in newer trees) in ``python/wheels``: a Debian ``+ds`` tree strips them, so they
    come from PyPI once and are kept in the cache."""
    deps = src / "pythondeps.toml"
    if not deps.is_file():
        return
    wheels, kept = src / "python" / "wheels", cache_root() / "wheels"
    for package, spec in tomllib.loads(deps.read_text()).get("meson", {}).items():
        version = spec.get("installed") if isinstance(spec, dict) else None
        if version is None or any(wheels.glob(f"{package}-{version}-*.whl")):
            continue
        if not any(kept.glob(f"{package}-{version}-*.whl")):
            _run(name, [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--dest", str(kept), f"{package}=={version}"], src, log,
                 f"fetching the {package} {version} wheel from PyPI", src)
        wheels.mkdir(parents=True, exist_ok=True)
        for wheel in kept.glob(f"{package}-{version}-*.whl"):
            shutil.copy2(wheel, wheels / wheel.name)


def _apply(name: str, patch: Path, src: Path, log: Path) -> None:
    proc = subprocess.run(["git", "apply", "--verbose", str(patch.resolve())], cwd=src,
                          capture_output=True, text=True, check=False)
    with log.open("a") as out:
        out.write(f"$ git apply {patch}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines()
                if line.startswith("error:") and not line.startswith("error: while searching for")]
        raise BuildError(f"build {name!r}: patch {patch} does not apply: {'; '.join(said[:2])} "
                         f"(log {log})")


def _run(name: str, argv: list[str], cwd: Path, log: Path, what: str, src: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False,
                                  timeout=BUILD_S, env=dict(os.environ, LC_ALL="C"))
        except FileNotFoundError as exc:
            raise BuildError(f"build {name!r}: {what} cannot run: {exc}; `make setup` installs "
                             "what a source build needs") from None
    if proc.returncode != 0:
        text = log.read_text(errors="replace")
        error = first_error(text, src) or text.strip().splitlines()[-1]
        raise BuildError(f"build {name!r}: {what} failed: {error} (log {log})")


def _files(root: Path) -> list[str]:
    """The tree's files (and symlinks), relative, without its SKIPPED top-level entries."""
    found = []
    for entry in os.scandir(root):
        if entry.name in SKIPPED:
            continue
        stack = [entry]
        while stack:
            item = stack.pop()
            if item.is_dir(follow_symlinks=False):
                stack.extend(os.scandir(item.path))
            else:
                found.append(os.path.relpath(item.path, root))
    return found


def _stat(path: Path) -> str:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "deleted"
    return f"{st.st_size}|{st.st_mtime_ns}"


def git(tree: Path, *args: str, check_ok: bool = True) -> str:
    """``git -C tree args``' output; a BuildError with git's own words when it fails (unless
    ``check_ok`` is False: a failure then gives what it printed)."""
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False)
    if check_ok and proc.returncode != 0:
        raise BuildError(f"{tree}: git {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
