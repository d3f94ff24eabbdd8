#!/usr/bin/env python3
"""Build the goldmig golden guest image (stdlib only).

    python3 guests/golden/build.py --out DIR [--kernel goldmig|debian]

produces DIR/vmlinux, DIR/initrd.gz and DIR/manifest.json from the pinned
inputs in recipe.json (beside this file). The kernel is one of two:

- ``goldmig`` (the default): our own, built by kernel/build_kernel.py from
  Debian's linux-source package with kernel/goldmig.config, and cached by it
  in ``~/.cache/goldmig/kernels/<key>`` (a first build takes minutes; a
  cached one whose files match its manifest is reused);
- ``debian``: Debian's generic kernel, the pinned series' linux-image package.

The initramfs is the same for both:

1. make sure dpkg knows the foreign architecture and apt knows the packages
   (``dpkg --add-architecture`` / ``apt-get update`` only when needed);
2. resolve busybox-static (and for ``debian`` the kernel, through its
   meta-package), refusing anything outside the pinned series;
3. ``apt-get download`` the .debs into a reusable cache
   (``~/.cache/goldmig/debs``), verified against apt's SHA256;
4. extract them with ``dpkg-deb -x`` and cross-compile agent.c;
5. pack the initramfs reproducibly (sorted entries, mtimes from
   SOURCE_DATE_EPOCH, uid/gid 0, ``cpio --reproducible``, ``gzip -n -9``);
6. write a manifest naming every input and output by version and sha256 (for
   ``goldmig`` its ``kernel`` entry names the kernel's source, config and
   compiler; a ``debian`` image's manifest lists the kernel among its packages).

The output is assembled in a temporary directory beside DIR and renamed into
place, so an interrupted build leaves nothing half-done.  Every expected
failure ends with a one-paragraph ``error:`` message and a non-zero exit
status; ``--debug`` adds tracebacks for unexpected ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
RECIPE_PATH = HERE / "recipe.json"
BUILD_KERNEL = HERE / "kernel" / "build_kernel.py"
KERNELS = ("goldmig", "debian")  # the first is the default
MANIFEST_FORMAT = 1
AGENT_PATH = "sbin/goldmig-agent"  # inside the initramfs
SUITE_POCKETS = ("", "-updates", "-security")  # same release, newer builds
TOOL_PACKAGES = {  # tool -> Debian package that provides it
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg": "dpkg",
    "dpkg-deb": "dpkg",
    "cpio": "cpio",
    "gzip": "gzip",
}
# Parse tool output in one language, and keep packing independent of the caller's locale/zone.
TOOL_ENV = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}


class BuildError(Exception):
    """An expected failure; the message says what failed and what to do."""


def log(message: str) -> None:
    print(f"build.py: {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(
    argv: list[str],
    *,
    what: str,
    hint: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    stdout: Any = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell); any failure becomes a BuildError naming `what` and `hint`.

    The command gets its own process group, killed whole if we are interrupted:
    dpkg-deb and apt fork helpers that would otherwise outlive us and keep
    writing into the temp dir being removed.
    """
    try:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=TOOL_ENV,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise BuildError(f"{what}: command {argv[0]!r} not found. {hint}") from exc
    try:
        out, err = child.communicate(stdin)
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    proc = subprocess.CompletedProcess(argv, child.returncode, out, err)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("E:")] or lines[-6:]
        tail = " | ".join(errors).rstrip(".")
        message = f"{what} failed: `{' '.join(argv)}` exited with {proc.returncode}"
        message += f": {tail}." if tail else "."
        raise BuildError(f"{message} {hint}".strip())
    return proc


# ---------------------------------------------------------------- recipe


@dataclasses.dataclass(frozen=True)
class Recipe:
    """recipe.json, validated."""

    raw: dict[str, Any]
    sha256: str
    suite: str
    arch: str
    source_date_epoch: int
    kernel_meta: str
    kernel_regex: re.Pattern[str]
    kernel_prefix: str
    busybox_package: str
    busybox_prefix: str
    kernel_cmdline: str
    cc: str
    cflags: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> Recipe:
        def fail(why: str) -> NoReturn:
            raise BuildError(f"{path} is not a valid recipe: {why}. Fix the file.")

        try:
            data = path.read_bytes()
            raw = json.loads(data)
        except (OSError, ValueError) as exc:
            fail(str(exc))

        def get(obj: Any, key: str, kind: type, where: str = "") -> Any:
            if not isinstance(obj, dict) or key not in obj:
                fail(f"missing key {where}{key!r}")
            value = obj[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                fail(f"{where}{key!r} must be a {kind.__name__}")
            return value

        if get(raw, "format", int) != 1:
            fail("unsupported 'format' (this build.py reads format 1)")
        kernel = get(raw, "kernel", dict)
        busybox = get(raw, "busybox", dict)
        compiler = get(raw, "compiler", dict)
        flags = get(compiler, "flags", list, "compiler.")
        if not all(isinstance(f, str) for f in flags):
            fail("'compiler.flags' must be a list of strings")
        try:
            kernel_regex = re.compile(get(kernel, "package_regex", str, "kernel."))
        except re.error as exc:
            fail(f"'kernel.package_regex': {exc}")
        if kernel_regex.groups != 1:
            fail("'kernel.package_regex' must have one group capturing the kernel version")
        return cls(
            raw=raw,
            sha256=hashlib.sha256(data).hexdigest(),
            suite=get(raw, "suite", str),
            arch=get(raw, "arch", str),
            source_date_epoch=get(raw, "source_date_epoch", int),
            kernel_meta=get(kernel, "meta_package", str, "kernel."),
            kernel_regex=kernel_regex,
            kernel_prefix=get(kernel, "version_prefix", str, "kernel."),
            busybox_package=get(busybox, "package", str, "busybox."),
            busybox_prefix=get(busybox, "version_prefix", str, "busybox."),
            kernel_cmdline=get(raw, "kernel_cmdline", str),
            cc=get(compiler, "command", str, "compiler."),
            cflags=tuple(flags),
        )


# ---------------------------------------------------------------- apt


@dataclasses.dataclass(frozen=True)
class Package:
    """One .deb that went into the image."""

    role: str
    name: str
    arch: str
    version: str
    sha256: str
    deb: Path
    resolved_via: tuple[str, str] | None = None  # (meta-package, its version)

    def manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "role": self.role,
            "name": self.name,
            "arch": self.arch,
            "version": self.version,
            "deb": self.deb.name,
            "deb_sha256": self.sha256,
        }
        if self.resolved_via:
            entry["resolved_via"] = {"name": self.resolved_via[0], "version": self.resolved_via[1]}
        return entry


class Apt:
    """The host's apt, asked about one foreign architecture and one suite."""

    def __init__(self, arch: str, suite: str) -> None:
        self.arch = arch
        self.suite = suite
        self.updated = False
        self.update_error: str | None = None

    def ensure_arch(self) -> None:
        """Enable the foreign architecture; a fresh one needs an apt-get update."""
        native = run(["dpkg", "--print-architecture"], what="asking dpkg", hint="").stdout
        foreign = run(
            ["dpkg", "--print-foreign-architectures"], what="asking dpkg", hint=""
        ).stdout.split()
        if self.arch == native.strip() or self.arch in foreign:
            return
        self._need_root(f"enabling the {self.arch} architecture")
        log(f"enabling foreign architecture {self.arch}")
        run(
            ["dpkg", "--add-architecture", self.arch],
            what=f"dpkg --add-architecture {self.arch}",
            hint="Run it by hand as root and retry.",
        )
        self.update()

    def update(self) -> None:
        if self.updated:
            return
        self._need_root("apt-get update")
        log("running apt-get update")
        self.updated = True
        try:
            run(["apt-get", "update", "-q"], what="apt-get update", hint="")
        except BuildError as exc:
            # apt fails the whole update for one bad index (another suite, a mirror
            # mid-sync) while ours may be fine: go on, and mention it if we fail later.
            self.update_error = str(exc).strip()
            log(f"warning: {self.update_error} Going on with the lists apt has.")

    def _after_update(self) -> str:
        """What to add to a failure message if apt-get update had failed."""
        return f" (Earlier, {self.update_error})" if self.update_error else ""

    def _need_root(self, action: str) -> None:
        if os.geteuid() != 0:
            raise BuildError(
                f"{action} is needed (apt does not know the pinned {self.arch} packages yet) "
                "and needs root. Run as root, or run `dpkg --add-architecture "
                f"{self.arch} && apt-get update` as root once, then retry."
            )

    def candidates(self, name: str) -> list[tuple[str, str]]:
        """(version, suite) pairs apt offers for name:arch, any suite."""
        proc = run(
            ["apt-cache", "madison", f"{name}:{self.arch}"],
            what=f"apt-cache madison {name}:{self.arch}",
            hint="Check that apt works on this host.",
        )
        found = []
        for line in proc.stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 3:
                continue
            source = parts[2].split()
            # "<uri> <suite>/<component> <arch> Packages"
            if len(source) == 4 and source[2] == self.arch and source[3] == "Packages":
                found.append((parts[1], source[1].split("/")[0]))
        return found

    def pick(self, name: str, prefix: str) -> str:
        """Newest version of name:arch from the pinned suite whose version starts with prefix."""
        offered = self.candidates(name)
        if not offered and not self.updated:
            self.update()
            offered = self.candidates(name)
        in_suite = [v for v, s in offered if s in {self.suite + p for p in SUITE_POCKETS}]
        if not in_suite:
            where = ", ".join(sorted({f"{v} ({s})" for v, s in offered})) or "nothing"
            raise BuildError(
                f"package {name}:{self.arch} is not available from Debian {self.suite} "
                f"(apt offers: {where}). Check the package name in recipe.json; if it is right, "
                f"add a `{self.suite}` entry to the apt sources (/etc/apt/sources.list.d/) "
                "and run apt-get update, then retry." + self._after_update()
            )
        in_series = [v for v in in_suite if v.startswith(prefix)]
        if not in_series:
            raise BuildError(
                f"series mismatch: {name}:{self.arch} in {self.suite} offers "
                f"{', '.join(sorted(set(in_suite)))}, outside the pinned series {prefix}*. "
                "A new series is a new golden image: change recipe.json deliberately "
                "(and expect new image ids), do not work around it."
            )
        return max(in_series, key=functools.cmp_to_key(self._compare))

    def _compare(self, a: str, b: str) -> int:
        if a == b:
            return 0
        gt = subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False)
        return 1 if gt.returncode == 0 else -1

    def field(self, name: str, version: str, key: str) -> str:
        """One control field of name:arch=version (first record)."""
        proc = run(
            ["apt-cache", "show", f"{name}:{self.arch}={version}"],
            what=f"apt-cache show {name}:{self.arch}={version}",
            hint="Run apt-get update and retry.",
        )
        record = proc.stdout.split("\n\n")[0]
        match = re.search(rf"^{re.escape(key)}: (.*(?:\n .*)*)", record, re.MULTILINE)
        if not match:
            raise BuildError(
                f"apt has no {key!r} field for {name}:{self.arch}={version}. "
                "Run apt-get update and retry."
            )
        return " ".join(match.group(1).split())

    def download(self, role: str, name: str, version: str, cache: Path) -> Package:
        """The verified .deb for name:arch=version, from the cache or downloaded into it."""
        expected = self.field(name, version, "SHA256")
        deb = cache / f"{name}_{version.replace(':', '%3a')}_{self.arch}.deb"
        if deb.is_file() and sha256_file(deb) == expected:
            log(f"using cached {deb.name}")
        else:
            log(f"downloading {name}:{self.arch}={version}")
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(
                prefix=".download-", dir=cache, ignore_cleanup_errors=True
            ) as tmp:
                try:
                    self._apt_get_download(name, version, Path(tmp))
                except BuildError:
                    if self.updated:
                        raise
                    self.update()  # the lists may name a version the mirror has dropped
                    try:
                        self._apt_get_download(name, version, Path(tmp))
                    except BuildError as exc:
                        raise BuildError(str(exc) + self._after_update()) from exc
                fetched = list(Path(tmp).glob("*.deb"))
                if len(fetched) != 1:
                    raise BuildError(f"apt-get download of {name} produced {len(fetched)} files.")
                got = sha256_file(fetched[0])
                if got != expected:
                    raise BuildError(
                        f"downloaded {fetched[0].name} has sha256 {got}, apt expects "
                        f"{expected}. Run apt-get update and retry."
                    )
                os.replace(fetched[0], deb)
        return Package(role, name, self.arch, version, expected, deb)

    def _apt_get_download(self, name: str, version: str, into: Path) -> None:
        # As root, apt would drop to user _apt, who cannot write into root's cache.
        sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
        run(
            ["apt-get", "download", "-q", *sandbox, f"{name}:{self.arch}={version}"],
            cwd=into,
            what=f"downloading {name}:{self.arch}={version}",
            hint="Check the network and the apt mirror, then retry.",
        )


def resolve_packages(apt: Apt, recipe: Recipe, cache: Path) -> tuple[Package, Package, str]:
    """Download the pinned kernel and busybox; also return the kernel version string."""
    meta_version = apt.pick(recipe.kernel_meta, recipe.kernel_prefix)
    depends = apt.field(recipe.kernel_meta, meta_version, "Depends")
    kernel_name = kernel_version = kver = None
    for alternative in depends.split(","):
        match = re.match(r"\s*([^\s(|]+)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?", alternative)
        if match:
            found = recipe.kernel_regex.match(match.group(1).split(":")[0])
            if found:
                kernel_name, kernel_version, kver = match.group(1), match.group(2), found.group(1)
                break
    if not kernel_name or not kver:
        raise BuildError(
            f"series mismatch: {recipe.kernel_meta} {meta_version} depends on {depends!r}, "
            f"none of which matches the pinned kernel series {recipe.kernel_regex.pattern}. "
            "Change recipe.json deliberately if the series is meant to move."
        )
    if kernel_version is None:
        kernel_version = apt.pick(kernel_name, recipe.kernel_prefix)
    elif not kernel_version.startswith(recipe.kernel_prefix):
        raise BuildError(
            f"series mismatch: {kernel_name} version {kernel_version} is outside the pinned "
            f"series {recipe.kernel_prefix}*. Change recipe.json deliberately if meant."
        )
    kernel = apt.download("kernel", kernel_name, kernel_version, cache)
    kernel = dataclasses.replace(kernel, resolved_via=(recipe.kernel_meta, meta_version))
    return kernel, resolve_busybox(apt, recipe, cache), kver


def resolve_busybox(apt: Apt, recipe: Recipe, cache: Path) -> Package:
    """Download the pinned busybox-static."""
    bb_version = apt.pick(recipe.busybox_package, recipe.busybox_prefix)
    return apt.download("busybox", recipe.busybox_package, bb_version, cache)


# ---------------------------------------------------------------- our own kernel


@dataclasses.dataclass(frozen=True)
class GoldmigKernel:
    """A kernel built by kernel/build_kernel.py: its directory, input key and manifest."""

    directory: Path
    key: str
    manifest: dict[str, Any]

    @property
    def release(self) -> str:
        return str(self.manifest["kernel_release"])

    def image_entry(self) -> dict[str, Any]:
        """What the image's manifest says of its kernel: id, release, sha256, source, config,
        compiler."""
        m = self.manifest
        return {
            "kind": "goldmig",
            "kernel_id": m["kernel_id"],
            "kernel_release": m["kernel_release"],
            "build_key": self.key,
            "vmlinux_sha256": m["files"]["vmlinux"]["sha256"],
            "source": m["source"],
            "config": m["config"],
            "build": m["build"],
            "kernel_json_sha256": m["kernel_json_sha256"],
            "build_kernel_py_sha256": m["build_kernel_py_sha256"],
        }


def kernel_damage(directory: Path) -> str | None:
    """Why a built kernel directory cannot be used (one line), or None when every file its
    manifest lists is there with the recorded size and sha256."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or "vmlinux" not in files:
            raise KeyError("files.vmlinux")
        for key in ("kernel_release", "kernel_id", "source", "config", "build"):
            if key not in manifest:
                raise KeyError(key)
    except FileNotFoundError:
        return "not built yet"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest.json is unreadable ({type(exc).__name__}: {exc})"
    for name, entry in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            return f"{name} does not match its manifest"
    return None


def goldmig_kernel(kernels: Path, deb_cache: Path) -> GoldmigKernel:
    """Our kernel for the current inputs: from kernels/<key> when its files match its manifest,
    else built there by build_kernel.py (minutes; its progress is passed on to our stderr)."""
    key = run(
        [sys.executable, str(BUILD_KERNEL), "--print-key"],
        what="build_kernel.py --print-key",
        hint="Fix guests/golden/kernel/kernel.json.",
    ).stdout.strip()
    directory = kernels / key
    why = kernel_damage(directory)
    if why is not None:
        log(f"building the golden kernel into {directory} ({why}); a first build takes minutes")
        run_streaming(
            [sys.executable, str(BUILD_KERNEL), "--out", str(directory), "--deb-cache",
             str(deb_cache)],
            what="building the golden kernel",
            marker="build_kernel.py: error: ",
        )
        why = kernel_damage(directory)
        if why is not None:
            raise BuildError(f"build_kernel.py left an unusable kernel in {directory}: {why}.")
    manifest = json.loads((directory / "manifest.json").read_text())
    log(f"using kernel {manifest['kernel_id']} from {directory}")
    return GoldmigKernel(directory, key, manifest)


def run_streaming(argv: list[str], *, what: str, marker: str) -> None:
    """Run argv with its stderr passed on line by line (a long build shows its progress); a
    failure becomes a BuildError quoting the child's own ``error:`` paragraph."""
    child = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=TOOL_ENV, start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()
        code = child.wait()
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    if code != 0:
        text = "".join(lines)
        at = text.rfind(marker)
        why = text[at + len(marker):].strip() if at >= 0 else " | ".join(lines[-6:]).strip()
        raise BuildError(f"{what} failed (exit {code}): {why}")


# ---------------------------------------------------------------- build steps


def extract(deb: Path, into: Path) -> Path:
    run(
        ["dpkg-deb", "-x", str(deb), str(into)],
        what=f"extracting {deb.name}",
        hint=f"Delete {deb} (it will be downloaded again) and retry.",
    )
    return into


def compile_agent(recipe: Recipe, work: Path) -> tuple[Path, str]:
    """Cross-compile agent.c in work/ (a fixed relative name keeps the binary path-free)."""
    version = run([recipe.cc, "--version"], what=f"{recipe.cc} --version", hint="")
    shutil.copyfile(HERE / "agent.c", work / "agent.c")
    proc = run(
        [recipe.cc, *recipe.cflags, "-o", "agent", "agent.c"],
        cwd=work,
        what="compiling agent.c",
        hint="Fix the compile error in guests/golden/agent.c.",
    )
    if proc.stderr.strip():
        log(f"compiler warnings (agent.c should build cleanly):\n{proc.stderr.rstrip()}")
    return work / "agent", version.stdout.splitlines()[0].strip()


def stage_initramfs(root: Path, busybox: Path, agent: Path, epoch: int) -> list[str]:
    """Lay out the initramfs tree with explicit modes and mtimes; return sorted entry names."""
    for name in ("bin", "dev", "proc", "sbin", "sys"):
        (root / name).mkdir(parents=True)
    for src, dst in ((busybox, "bin/busybox"), (HERE / "init", "init"), (agent, AGENT_PATH)):
        shutil.copyfile(src, root / dst)
    os.symlink("busybox", root / "bin/sh")
    # The kernel opens /dev/console for init before our devtmpfs is mounted.
    try:
        os.mknod(root / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    except PermissionError as exc:
        raise BuildError(
            "creating the /dev/console device node for the initramfs needs root (mknod). "
            "Run build.py as root."
        ) from exc
    entries = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    modes = {"init": 0o755, "bin/busybox": 0o755, AGENT_PATH: 0o755, "dev/console": 0o600}
    for entry in entries:
        path = root / entry
        if not path.is_symlink():  # a symlink's own mode is fixed (0777)
            path.chmod(0o755 if path.is_dir() else modes.get(entry, 0o644))
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    return entries


def pack_initramfs(root: Path, entries: list[str], out: Path) -> None:
    """newc cpio of the sorted entries, owned by 0:0, then gzip without name or time."""
    cpio = root.parent / "initramfs.cpio"
    with cpio.open("wb") as f:
        run(
            ["cpio", "-o", "-H", "newc", "--reproducible", "-R", "0:0", "--quiet"],
            cwd=root,
            stdin="".join(e + "\n" for e in entries),
            stdout=f,
            what="packing the initramfs with cpio",
            hint="GNU cpio 2.13 or newer is needed (Debian package cpio).",
        )
    with out.open("wb") as f:
        run(
            ["gzip", "-n", "-9", "-c", str(cpio)],
            stdout=f,
            what="compressing the initramfs",
            hint="Check that gzip is installed and the disk is not full.",
        )


def tool_version(tool: str) -> str:
    return run([tool, "--version"], what=f"{tool} --version", hint="").stdout.splitlines()[0]


def check_tools(recipe: Recipe) -> None:
    """Fail before downloading anything if a host tool is missing."""
    needed = {**TOOL_PACKAGES, recipe.cc: f"gcc-{recipe.cc.removesuffix('-gcc')}"}
    missing = [f"{tool} (package {pkg})" for tool, pkg in needed.items() if not shutil.which(tool)]
    if missing:
        raise BuildError(
            f"missing host tools: {', '.join(missing)}. Install them with apt-get and retry."
        )


def build(
    out: Path, deb_cache: Path, kernel_kind: str = KERNELS[0], kernels: Path | None = None
) -> dict[str, Any]:
    if kernel_kind not in KERNELS:
        raise BuildError(f"unknown kernel {kernel_kind!r}: one of {', '.join(KERNELS)}.")
    recipe = Recipe.load(RECIPE_PATH)
    check_tools(recipe)
    apt = Apt(recipe.arch, recipe.suite)
    apt.ensure_arch()
    own: GoldmigKernel | None = None
    if kernel_kind == "debian":
        kernel, busybox, kver = resolve_packages(apt, recipe, deb_cache)
    else:
        busybox = resolve_busybox(apt, recipe, deb_cache)  # first: apt fails fast, a kernel slowly
        own = goldmig_kernel(kernels or default_kernels(), deb_cache)
        kver = own.release

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="goldmig-build-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        if own is not None:
            vmlinux_src = own.directory / "vmlinux"
        else:
            kroot = extract(kernel.deb, work / "kernel")
            vmlinux_src = kroot / "boot" / f"vmlinux-{kver}"
            if not vmlinux_src.is_file():
                raise BuildError(
                    f"{kernel.deb.name} has no boot/vmlinux-{kver}. The recipe's kernel package "
                    "does not look like a Debian ppc64el kernel image; check recipe.json."
                )
        bb = extract(busybox.deb, work / "busybox") / "bin" / "busybox"
        if not bb.is_file():
            raise BuildError(f"{busybox.deb.name} has no bin/busybox; check recipe.json.")
        log("compiling the agent")
        agent, cc_version = compile_agent(recipe, work)
        log("packing the initramfs")
        entries = stage_initramfs(work / "initramfs", bb, agent, recipe.source_date_epoch)

        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            staging.chmod(0o755)  # mkdtemp makes it 0700
            shutil.copyfile(vmlinux_src, staging / "vmlinux")
            pack_initramfs(work / "initramfs", entries, staging / "initrd.gz")
            image = hashlib.sha256()
            for name in ("vmlinux", "initrd.gz"):
                image.update((staging / name).read_bytes())
            files = {
                "vmlinux": staging / "vmlinux",
                "initrd.gz": staging / "initrd.gz",
                "initramfs.cpio": work / "initramfs.cpio",
                "busybox": bb,
                "agent": agent,
                "agent.c": HERE / "agent.c",
                "init": HERE / "init",
            }
            if own is not None:
                files["kernel.config"] = own.directory / "config"
            # A debian image's manifest is as it always was (no "kernel" entry: its kernel is
            # the package of role "kernel"), so its image id and its readers stay the same.
            manifest = {
                "format": MANIFEST_FORMAT,
                "image_id": f"golden-{kver}-{image.hexdigest()[:12]}",
                "kernel_version": kver,
                "kernel_cmdline": recipe.kernel_cmdline,
                **({"kernel": own.image_entry()} if own is not None else {}),
                "recipe": recipe.raw,
                "recipe_sha256": recipe.sha256,
                "packages": [busybox.manifest()] if own else [kernel.manifest(), busybox.manifest()],
                "files": {
                    name: {"sha256": sha256_file(path), "size": path.stat().st_size}
                    for name, path in files.items()
                },
                "initramfs_entries": entries,
                "toolchain": {
                    "compiler": cc_version,
                    "compiler_command": [recipe.cc, *recipe.cflags],
                    "cpio": tool_version("cpio"),
                    "gzip": tool_version("gzip"),
                },
            }
            (staging / "manifest.json").write_text(
                json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            )
            replace_dir(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return manifest


def replace_dir(new: Path, dest: Path) -> None:
    """Rename new to dest; an existing dest is moved aside first and removed after."""
    if not dest.exists():
        new.rename(dest)
        return
    if not dest.is_dir():
        raise BuildError(f"--out {dest} exists and is not a directory. Pick another path.")
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    dest.rename(old / "d")
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def default_deb_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "goldmig" / "debs"


def default_kernels() -> Path:
    """Where build_kernel.py keeps its kernels by default (~/.cache/goldmig/kernels)."""
    return default_deb_cache().parent / "kernels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--deb-cache",
        type=Path,
        default=default_deb_cache(),
        help="where downloaded .debs are kept and reused (default: %(default)s)",
    )
    parser.add_argument(
        "--kernel",
        choices=KERNELS,
        default=KERNELS[0],
        help="goldmig: our own kernel, built by kernel/build_kernel.py (cached); debian: Debian's "
        "generic linux-image package (default: %(default)s)",
    )
    parser.add_argument(
        "--kernels",
        type=Path,
        default=default_kernels(),
        help="where build_kernel.py's kernels are kept and reused (default: %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks for unexpected errors")
    args = parser.parse_args(argv)

    def work() -> int:
        manifest = build(args.out.resolve(), args.deb_cache, args.kernel, args.kernels)
        log(f"built {manifest['image_id']} in {args.out}")
        return 0

    return guarded("build.py", "--out, the .deb cache and the temp dir", args.debug, work)


def guarded(tool: str, places: str, debug: bool, work: Callable[[], int]) -> int:
    """``work()``'s exit status, with SIGTERM taken as an interrupt and every failure said in one
    ``<tool>: error:`` paragraph (a traceback only with ``debug``); ``places`` are what to check
    when the file system fails. Shared with kernel/build_kernel.py."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return work()
    except BuildError as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{tool}: error: interrupted; nothing was written to --out.", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        print(f"{tool}: error: file system error: {exc}. Check free space and permissions of "
              f"{places}, then retry.", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, reported without a traceback
        if debug:
            raise
        print(f"{tool}: error: internal error (a bug in {tool}): {type(exc).__name__}: {exc}. "
              "Rerun with --debug for the traceback and report it.", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
