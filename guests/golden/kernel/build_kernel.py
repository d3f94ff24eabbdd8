#!/usr/bin/env python3
"""Build the goldmig golden guest kernel from Debian's Linux source (stdlib only).

    python3 guests/golden/kernel/build_kernel.py [--out DIR]

produces DIR/vmlinux, DIR/config and DIR/manifest.json from the pinned inputs
beside this file (kernel.json, goldmig.config) and the golden recipe's
source_date_epoch (../recipe.json):

1. ``apt-get download`` the pinned ``linux-source-6.1`` package (version and
   sha256 in kernel.json, checked against apt's SHA256 too) into the .deb
   cache shared with build.py (``~/.cache/goldmig/debs``);
2. unpack its source tarball into a work dir keyed by the inputs
   (``~/.cache/goldmig/kernel-work/<key>``, removed after a successful build
   unless ``--keep-work``; a kept tree is reused, so a second run only
   relinks), and build in the tree itself;
3. configure: ``allnoconfig`` plus our fragment (``merge_config.sh -n``), then
   ``make olddefconfig``, and fail naming every option of the fragment that
   did not end up as the fragment asks;
4. cross-compile ``vmlinux`` under ``nice`` with fixed timestamps, user, host
   and version strings (no modules, so nothing to sign);
5. write a manifest naming the source package, config, compiler and output by
   version and sha256.

Reproducible without stripping anything: no debug info, no modules (so no
signing key), paths relative to the tree (an in-tree build, and Kbuild's
``-fmacro-prefix-map``), the version string's user, host, number and date
fixed, and the built-in initramfs list dated by KBUILD_BUILD_TIMESTAMP. Two
builds in different work dirs give the same vmlinux, byte for byte.

DIR defaults to ``~/.cache/goldmig/kernels/<key>``; as with build.py it is
assembled beside DIR and renamed into place.  Every expected failure ends with
a one-paragraph ``error:`` message and a non-zero exit status; ``--debug``
adds tracebacks for unexpected ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
GOLDEN_DIR = HERE.parent
KERNEL_JSON = HERE / "kernel.json"
RECIPE_PATH = GOLDEN_DIR / "recipe.json"
MANIFEST_FORMAT = 1
OUTPUT_FILES = ("vmlinux", "config", "manifest.json")
KEY_INPUTS = ("kernel.json", "build_kernel.py")  # plus the fragment and the epoch, see input_key
SOURCE_MARKER = ".goldmig-source"  # in the unpacked tree: the .deb's sha256, once fully unpacked
HOST_TOOLS = {  # tool -> Debian package that provides it
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "tar": "tar",
    "xz": "xz-utils",
    "make": "make",
    "gcc": "gcc",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "nice": "coreutils",
}
CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
UNSET_LINE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def _load_golden_build() -> Any:
    """guests/golden/build.py, for its apt handling and helpers (one copy of them)."""
    spec = importlib.util.spec_from_file_location("goldmig_golden_build", GOLDEN_DIR / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


golden = _load_golden_build()
BuildError = golden.BuildError
sha256_file = golden.sha256_file
run = golden.run


def log(message: str) -> None:
    print(f"build_kernel.py: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class KernelRecipe:
    """kernel.json, validated, with what it takes from the golden recipe."""

    raw: dict[str, Any]
    sha256: str
    package: str
    version: str
    deb_sha256: str
    tarball: str
    base: str
    fragment: Path
    arch: str
    cross_compile: str
    build_user: str
    build_host: str
    build_version: str
    suite: str
    source_date_epoch: int

    @classmethod
    def load(cls, path: Path = KERNEL_JSON, recipe_path: Path = RECIPE_PATH) -> KernelRecipe:
        def fail(why: str) -> NoReturn:
            raise BuildError(f"{path} is not a valid kernel recipe: {why}. Fix the file.")

        try:
            data = path.read_bytes()
            raw = json.loads(data)
        except (OSError, ValueError) as exc:
            fail(str(exc))

        def get(obj: Any, key: str, where: str = "", kind: type = str) -> Any:
            if not isinstance(obj, dict) or key not in obj:
                fail(f"missing key {where}{key!r}")
            value = obj[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                fail(f"{where}{key!r} must be a {kind.__name__}")
            return value

        if get(raw, "format", kind=int) != 1:
            fail("unsupported 'format' (this build_kernel.py reads format 1)")
        source = get(raw, "source", kind=dict)
        config = get(raw, "config", kind=dict)
        deb_sha256 = get(source, "sha256", "source.")
        if not re.fullmatch(r"[0-9a-f]{64}", deb_sha256):
            fail("'source.sha256' must be 64 lower-case hex digits")
        tarball = get(source, "tarball", "source.")
        if tarball.startswith("/") or ".." in tarball.split("/") or not tarball.endswith(".tar.xz"):
            fail("'source.tarball' must be a relative path inside the package ending in .tar.xz")
        base = get(config, "base", "config.")
        if base != "allnoconfig":
            fail("'config.base' must be allnoconfig (the only base this script applies)")
        fragment_name = get(config, "fragment", "config.")
        if "/" in fragment_name:
            fail("'config.fragment' must be a file name beside kernel.json")
        strings = {k: get(raw, k) for k in ("arch", "cross_compile", "build_user", "build_host")}
        build_version = get(raw, "build_version")
        if not build_version.isdigit():
            fail("'build_version' must be a decimal number (it is the #N in the kernel version)")
        for key, value in strings.items():
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
                fail(f"{key!r} may hold only letters, digits and _.+-")
        try:
            golden_recipe = json.loads(recipe_path.read_text())
            epoch = golden_recipe["source_date_epoch"]
            suite = golden_recipe["suite"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BuildError(
                f"cannot read source_date_epoch and suite from {recipe_path}: "
                f"{type(exc).__name__}: {exc}. Fix that file."
            ) from exc
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch <= 0:
            raise BuildError(f"{recipe_path}: 'source_date_epoch' must be a positive integer.")
        return cls(
            raw=raw,
            sha256=hashlib.sha256(data).hexdigest(),
            package=get(source, "package", "source."),
            version=get(source, "version", "source."),
            deb_sha256=deb_sha256,
            tarball=tarball,
            base=base,
            fragment=path.parent / fragment_name,
            arch=strings["arch"],
            cross_compile=strings["cross_compile"],
            build_user=strings["build_user"],
            build_host=strings["build_host"],
            build_version=build_version,
            suite=str(suite),
            source_date_epoch=epoch,
        )

    @property
    def timestamp(self) -> str:
        """KBUILD_BUILD_TIMESTAMP: `date`'s format (gen_initramfs.sh feeds it to `date -d`)."""
        return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(self.source_date_epoch))

    def make_env(self) -> dict[str, str]:
        return {
            **golden.TOOL_ENV,
            "ARCH": self.arch,
            "CROSS_COMPILE": self.cross_compile,
            "KBUILD_BUILD_TIMESTAMP": self.timestamp,
            "KBUILD_BUILD_USER": self.build_user,
            "KBUILD_BUILD_HOST": self.build_host,
            "KBUILD_BUILD_VERSION": self.build_version,
            "SOURCE_DATE_EPOCH": str(self.source_date_epoch),
        }


def parse_config(text: str, *, where: str) -> dict[str, str | None]:
    """CONFIG_X -> value (None for "is not set") from a .config or a fragment.

    Other comments and blank lines are skipped; anything else is an error, as is
    an option given twice (a fragment that says two things about one option).
    """
    options: dict[str, str | None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        set_match = CONFIG_LINE.match(line)
        unset_match = UNSET_LINE.match(line)
        if set_match:
            name, value = set_match.group(1), set_match.group(2)
        elif unset_match:
            name, value = unset_match.group(1), None
        elif not line or line.startswith("#"):
            continue
        else:
            raise BuildError(f"{where}:{number}: not a config line: {line!r}. Fix the file.")
        if name in options:
            raise BuildError(f"{where}:{number}: {name} is given twice. Keep one.")
        options[name] = value
    return options


def config_mismatches(wanted: dict[str, str | None], final: dict[str, str | None]) -> list[str]:
    """Each option of the fragment that the final .config does not hold as asked."""
    problems = []
    for name, value in wanted.items():
        got = final.get(name)
        if value in (None, "n"):  # "is not set": absent (its dependencies are off) is as good
            if got not in (None, "n"):
                problems.append(f"{name} should be unset but is {got}")
        elif name not in final:
            problems.append(f"{name}={value} is missing (a dependency is off, or no such option)")
        elif got is None:
            problems.append(f"{name}={value} is not set (a dependency is off, or it is selected off)")
        elif got != value:
            problems.append(f"{name}={value} is {got}")
    return problems


def input_key(recipe: KernelRecipe) -> str:
    """16 hex digits naming the exact inputs: kernel.json, the fragment, this script, the epoch."""
    digest = hashlib.sha256()
    for path in (HERE / KEY_INPUTS[0], HERE / KEY_INPUTS[1], recipe.fragment):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"source_date_epoch={recipe.source_date_epoch}\0".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- source


def fetch_source(recipe: KernelRecipe, deb_cache: Path) -> Any:
    """The pinned source .deb, verified twice: apt's SHA256 and kernel.json's must both match."""
    apt = golden.Apt("all", recipe.suite)
    spec = f"{recipe.package}:all={recipe.version}"
    try:
        listed = apt.field(recipe.package, recipe.version, "SHA256")
    except BuildError:
        apt.update()
        try:
            listed = apt.field(recipe.package, recipe.version, "SHA256")
        except BuildError as exc:
            raise BuildError(
                f"apt does not know {spec} (the version pinned in {KERNEL_JSON.name}). If the "
                f"mirror dropped it, pin a newer {recipe.package} deliberately: its version and "
                "the SHA256 `apt-cache show` gives, in kernel.json (a new kernel, new ids)."
            ) from exc
    if listed != recipe.deb_sha256:
        raise BuildError(
            f"apt lists {spec} with sha256 {listed}, but kernel.json pins {recipe.deb_sha256}. "
            "The package was rebuilt under the same version or the pin is wrong; check and "
            "update kernel.json deliberately."
        )
    return apt.download("kernel-source", recipe.package, recipe.version, deb_cache)


def unpack_source(recipe: KernelRecipe, deb: Path, deb_sha256: str, work: Path) -> Path:
    """work/src: the kernel tree, unpacked once (a marker says it is complete) and reused."""
    src = work / "src"
    marker = src / SOURCE_MARKER
    if marker.is_file() and marker.read_text().strip() == deb_sha256:
        log(f"reusing the unpacked source in {src}")
        return src
    if src.exists():
        log(f"removing the incomplete or stale source tree {src}")
        shutil.rmtree(src)
    work.mkdir(parents=True, exist_ok=True)
    log(f"unpacking {recipe.tarball} from {deb.name}")
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=work) as tmp:
        golden.extract(deb, Path(tmp) / "deb")
        tarball = Path(tmp) / "deb" / recipe.tarball
        if not tarball.is_file():
            raise BuildError(
                f"{deb.name} has no {recipe.tarball}; check 'source.tarball' in kernel.json."
            )
        tree = Path(tmp) / "tree"
        tree.mkdir()
        run(
            ["tar", "-xJf", str(tarball), "-C", str(tree), "--no-same-owner"],
            what=f"unpacking {tarball.name}",
            hint="Check free space in the work dir and retry.",
        )
        tops = list(tree.iterdir())
        if len(tops) != 1 or not (tops[0] / "Makefile").is_file():
            raise BuildError(f"{tarball.name} does not hold one kernel tree at its top.")
        (tops[0] / SOURCE_MARKER).write_text(deb_sha256 + "\n")
        tops[0].rename(src)
    return src


# ---------------------------------------------------------------- build


def run_make(
    recipe: KernelRecipe, src: Path, args: list[str], *, what: str, log_path: Path, nice: int | None
) -> None:
    """make in the source tree, output appended to log_path; a failure quotes the errors."""
    argv = ["make", "-C", str(src), *args]
    if nice is not None:
        argv = ["nice", "-n", str(nice), *argv]
    with log_path.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            child = subprocess.Popen(
                argv,
                cwd=src,
                env=recipe.make_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise BuildError(f"{what}: command {argv[0]!r} not found.") from exc
        try:
            code = child.wait()
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
    if code != 0:
        lines = log_path.read_text(errors="replace").splitlines()
        errors = [line for line in lines if re.search(r"\berror\b|\*\*\*|not found", line, re.I)]
        tail = " | ".join((errors or lines)[-6:])
        raise BuildError(
            f"{what} failed: `{' '.join(argv)}` exited with {code}: {tail}. Full output: "
            f"{log_path}. A missing host library or tool shows there (Debian packages "
            "flex bison bc libssl-dev libelf-dev)."
        )


def configure(recipe: KernelRecipe, src: Path, log_path: Path) -> dict[str, str | None]:
    """allnoconfig + fragment, olddefconfig, then check the fragment against the result."""
    wanted = parse_config(recipe.fragment.read_text(), where=recipe.fragment.name)
    fragment_copy = src / ".goldmig-fragment.config"
    shutil.copyfile(recipe.fragment, fragment_copy)
    merge = src / "scripts" / "kconfig" / "merge_config.sh"
    argv = ["sh", str(merge), "-n", fragment_copy.name]  # -n: allnoconfig as the base
    with log_path.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(
            argv, cwd=src, env=recipe.make_env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, check=False,
        )
    if proc.returncode != 0:
        raise BuildError(f"merge_config.sh failed (exit {proc.returncode}); see {log_path}.")
    run_make(recipe, src, ["olddefconfig"], what="make olddefconfig", log_path=log_path, nice=None)
    final = parse_config((src / ".config").read_text(), where=".config")
    problems = config_mismatches(wanted, final)
    if problems:
        raise BuildError(
            f"the kernel config does not hold what {recipe.fragment.name} asks: "
            + "; ".join(problems)
            + ". Add the missing dependencies to the fragment (or drop the option), see "
            "`make ARCH=powerpc menuconfig` in the work dir for why."
        )
    return final


def tool_line(argv: list[str]) -> str:
    return str(run(argv, what=" ".join(argv), hint="").stdout.splitlines()[0].strip())


def check_tools(recipe: KernelRecipe) -> None:
    cc = recipe.cross_compile + "gcc"
    needed = {
        **HOST_TOOLS,
        cc: f"gcc-{recipe.cross_compile.rstrip('-')}",
        recipe.cross_compile + "ld": f"binutils-{recipe.cross_compile.rstrip('-')}",
    }
    missing = [f"{tool} (package {pkg})" for tool, pkg in needed.items() if not shutil.which(tool)]
    if missing:
        raise BuildError(
            f"missing host tools: {', '.join(missing)}. Install them with apt-get and retry."
        )


def make_manifest(
    recipe: KernelRecipe,
    *,
    source: dict[str, Any],
    kernel_release: str,
    toolchain: dict[str, str],
    files: dict[str, Path],
) -> dict[str, Any]:
    """The manifest of a built kernel (a pure function of its arguments, for the tests)."""
    file_entries = {
        name: {"sha256": sha256_file(path), "size": path.stat().st_size}
        for name, path in sorted(files.items())
    }
    return {
        "format": MANIFEST_FORMAT,
        "kernel_id": f"goldmig-{kernel_release}-{file_entries['vmlinux']['sha256'][:12]}",
        "kernel_release": kernel_release,
        "source": source,
        "config": {
            "base": recipe.base,
            "fragment": recipe.fragment.name,
            "fragment_sha256": sha256_file(recipe.fragment),
            "config_sha256": file_entries["config"]["sha256"],
        },
        "build": {
            "arch": recipe.arch,
            "cross_compile": recipe.cross_compile,
            "target": "vmlinux",
            "env": {k: v for k, v in sorted(recipe.make_env().items()) if k.startswith("KBUILD_")}
            | {"SOURCE_DATE_EPOCH": str(recipe.source_date_epoch)},
            "toolchain": toolchain,
        },
        "kernel_json": recipe.raw,
        "kernel_json_sha256": recipe.sha256,
        "build_kernel_py_sha256": sha256_file(Path(__file__)),
        "files": file_entries,
    }


def verify_manifest(directory: Path) -> dict[str, Any]:
    """Read directory/manifest.json and check every file it lists against its sha256 and size."""
    try:
        manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
        files = manifest["files"]
        if manifest["format"] != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError("unexpected format")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{directory}/manifest.json is unreadable: {exc}.") from exc
    for name in ("vmlinux", "config"):
        if name not in files:
            raise BuildError(f"{directory}/manifest.json lists no {name}.")
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise BuildError(f"{path} is missing (the manifest lists it).")
        got = sha256_file(path)
        if got != entry.get("sha256") or path.stat().st_size != entry.get("size"):
            raise BuildError(
                f"{path} has sha256 {got} ({path.stat().st_size} bytes), the manifest says "
                f"{entry.get('sha256')} ({entry.get('size')} bytes)."
            )
    return manifest


def build(
    out: Path | None,
    work: Path | None,
    deb_cache: Path,
    jobs: int,
    nice: int,
    keep_work: bool = False,
) -> tuple[Path, dict[str, Any]]:
    recipe = KernelRecipe.load()
    check_tools(recipe)
    key = input_key(recipe)
    out = out or default_cache() / "kernels" / key
    work = work or default_cache() / "kernel-work" / key
    package = fetch_source(recipe, deb_cache)
    if package.sha256 != recipe.deb_sha256:  # fetch_source checked apt's; this is the file's
        raise BuildError(f"{package.deb} does not match kernel.json's sha256; delete it and retry.")
    src = unpack_source(recipe, package.deb, package.sha256, work)
    log_path = work / "build.log"
    log_path.write_text("")
    log(f"configuring ({recipe.base} + {recipe.fragment.name}); log: {log_path}")
    configure(recipe, src, log_path)
    log(f"compiling vmlinux (make -j{jobs} under nice -n {nice}); this takes minutes")
    started = time.monotonic()
    run_make(recipe, src, [f"-j{jobs}", "vmlinux"], what="building vmlinux", log_path=log_path, nice=nice)
    log(f"vmlinux built in {time.monotonic() - started:.0f} s")
    release = (src / "include" / "config" / "kernel.release").read_text().strip()
    toolchain = {
        "compiler": tool_line([recipe.cross_compile + "gcc", "--version"]),
        "linker": tool_line([recipe.cross_compile + "ld", "--version"]),
        "make": tool_line(["make", "--version"]),
        "host_compiler": tool_line(["gcc", "--version"]),
    }
    source = {
        "package": recipe.package,
        "version": recipe.version,
        "deb": package.deb.name,
        "deb_sha256": package.sha256,
        "tarball": recipe.tarball,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        staging.chmod(0o755)
        shutil.copyfile(src / "vmlinux", staging / "vmlinux")
        shutil.copyfile(src / ".config", staging / "config")
        manifest = make_manifest(
            recipe,
            source=source,
            kernel_release=release,
            toolchain=toolchain,
            files={"vmlinux": staging / "vmlinux", "config": staging / "config"},
        )
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        golden.replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)  # 2 GB; a failed build's stays, with its log
    return out, manifest


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "goldmig"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, help="output directory (default: ~/.cache/goldmig/kernels/<key>)"
    )
    parser.add_argument(
        "--work", type=Path,
        help="where the source is unpacked and built (default: ~/.cache/goldmig/kernel-work/<key>)",
    )
    parser.add_argument(
        "--deb-cache", type=Path, default=golden.default_deb_cache(),
        help="where downloaded .debs are kept and reused (default: %(default)s)",
    )
    parser.add_argument("-j", "--jobs", type=int, default=2, help="make -j (default: %(default)s)")
    parser.add_argument(
        "--nice", type=int, default=15, help="niceness of the compile (default: %(default)s)"
    )
    parser.add_argument(
        "--keep-work", action="store_true",
        help="keep the unpacked and built tree after a successful build (default: removed)",
    )
    parser.add_argument("--print-key", action="store_true", help="print the input key and exit")
    parser.add_argument("--debug", action="store_true", help="tracebacks for unexpected errors")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not 0 <= args.nice <= 19:
        parser.error("--nice must be between 0 and 19")

    def work() -> int:
        if args.print_key:
            print(input_key(KernelRecipe.load()))
            return 0
        out, manifest = build(
            args.out.resolve() if args.out else None,
            args.work.resolve() if args.work else None,
            args.deb_cache,
            args.jobs,
            args.nice,
            args.keep_work,
        )
        log(f"built {manifest['kernel_id']} in {out}")
        return 0

    status: int = golden.guarded("build_kernel.py", "--out, the work dir and the .deb cache", args.debug,
                                 work)
    return status


if __name__ == "__main__":
    sys.exit(main())
