"""``kind: source`` on a tiny stand-in for a QEMU tree (a configure script that writes a
build.ninja for two C files): cached by what it is made from, rebuilt incrementally, its
failures named on the first line."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from harness.builds.compile import first_error
from harness.builds.source_build import DebianSourcePackage, SourceBuild, SuiteFirmware
from harness.errors import BuildError, ConfigError
from harness.matrix.reader import Reader

CONFIGURE = """#!/bin/sh
# A stand-in for QEMU's configure: a build.ninja for one binary made of two C files.
src=$(cd "$(dirname "$0")" && pwd)
case " $* " in *" --target-list=ppc64-softmmu "*) ;; *) echo "ERROR: no ppc64-softmmu target"; exit 1;; esac
printf '%s\\n' 'rule cc' '  command = gcc -c $in -o $out' 'rule link' '  command = gcc $in -o $out' \\
  "build main.o: cc $src/main.c" "build util.o: cc $src/util.c" \\
  'build qemu-system-ppc64: link main.o util.o' > build.ninja
"""
MAIN = '#include <stdio.h>\nconst char *version(void);\nint main(void) { puts(version()); return 0; }\n'
UTIL = 'const char *version(void) { return "QEMU emulator version 10.0.0"; }\n'
CANDIDATE = """--- a/util.c
+++ b/util.c
@@ -1 +1 @@
-const char *version(void) { return "QEMU emulator version 10.0.0"; }
+const char *version(void) { return "QEMU emulator version 10.0.0 (patched)"; }
"""


@pytest.fixture
def tree(tmp_path: Path, private_cache: Path) -> Path:
    root = tmp_path / "qemu"
    (root / "pc-bios").mkdir(parents=True)
    (root / "configure").write_text(CONFIGURE)
    (root / "configure").chmod(0o755)
    (root / "main.c").write_text(MAIN)
    (root / "util.c").write_text(UTIL)
    for blob in ("slof.bin", "vof.bin"):
        (root / "pc-bios" / blob).write_bytes(b"firmware")
    return root


def _run(binary: str) -> str:
    return subprocess.run([binary], capture_output=True, text=True, check=True).stdout.strip()


def test_a_tree_builds_and_a_second_use_is_a_cache_hit(tree: Path) -> None:
    build = SourceBuild("mine", tree).provision()
    assert _run(build.binary) == "QEMU emulator version 10.0.0"
    assert build.firmware_dir == str(tree / "pc-bios")
    assert build.package is not None and "firmware from the tree" in build.package

    started = time.monotonic()
    again = SourceBuild("mine", tree).provision()
    assert time.monotonic() - started < 1.0
    assert again == build


def test_a_one_file_change_rebuilds_only_that_file(tree: Path, private_cache: Path) -> None:
    SourceBuild("mine", tree).provision()
    objects = next((private_cache / "source-work").glob("[0-9a-f]*")) / "build"
    main_o = (objects / "main.o").stat().st_mtime_ns
    (tree / "util.c").write_text(UTIL.replace("10.0.0", "10.0.1"))
    build = SourceBuild("mine", tree).provision()
    assert _run(build.binary) == "QEMU emulator version 10.0.1"
    assert (objects / "main.o").stat().st_mtime_ns == main_o


def test_the_candidate_is_the_tree_plus_its_series_and_the_tree_is_untouched(
        tree: Path, tmp_path: Path) -> None:
    patch = tmp_path / "0001-patched.patch"
    patch.write_text(CANDIDATE)
    candidate = SourceBuild("candidate", tree, (patch,)).provision()
    base = SourceBuild("base", tree).provision()
    assert _run(candidate.binary).endswith("(patched)")
    assert _run(base.binary) == "QEMU emulator version 10.0.0"
    assert (tree / "util.c").read_text() == UTIL


def test_a_compile_error_is_named_on_the_first_line(tree: Path) -> None:
    (tree / "util.c").write_text("const char *version(void) { return 1 +; }\n")
    with pytest.raises(BuildError) as failed:
        SourceBuild("mine", tree).provision()
    first = str(failed.value).splitlines()[0]
    assert first.startswith("build 'mine': the build failed: util.c:1: expected expression"), first
    assert "build.log" in first


def test_a_patch_that_does_not_apply_names_the_patch_and_the_hunk(tree: Path, tmp_path: Path) -> None:
    patch = tmp_path / "0001-stale.patch"
    patch.write_text(CANDIDATE.replace('-const char *version(void) { return "QEMU emulator version 10.0.0"',
                                       '-const char *version(void) { return "QEMU emulator version 9.9.9"'))
    with pytest.raises(BuildError, match=r"patch .*0001-stale\.patch does not apply: error: patch "
                                         r"failed: util\.c:1"):
        SourceBuild("candidate", tree, (patch,)).provision()


def test_a_tree_without_firmware_needs_one_named(tree: Path, tmp_path: Path) -> None:
    for blob in ("slof.bin", "vof.bin"):
        (tree / "pc-bios" / blob).unlink()
    with pytest.raises(BuildError, match="set `firmware:`"):
        SourceBuild("mine", tree).provision()
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    for blob in ("slof.bin", "vof.bin"):
        (firmware / blob).write_bytes(b"firmware")
    assert SourceBuild("mine", tree, firmware=firmware).provision().firmware_dir == str(firmware)


def test_configure_errors_are_named() -> None:
    log = "$ ../src/configure\nchecking things\nERROR: Dependency \"glib-2.0\" not found\n"
    assert first_error(log) == 'ERROR: Dependency "glib-2.0" not found'


def _entry(data: dict) -> Reader:
    return Reader("matrix.yaml", data, "builds.mine")


def test_a_debian_source_package_and_a_suites_firmware_are_named_in_the_matrix() -> None:
    build = SourceBuild.from_matrix("mine", _entry(
        {"kind": "source", "debian": {"suite": "sid", "version": "1:10.2.2+ds-1"},
         "firmware": {"suite": "trixie"}}))
    assert build.tree == DebianSourcePackage("sid", "1:10.2.2+ds-1")
    assert build.firmware == SuiteFirmware("trixie")
    plain = SourceBuild.from_matrix("mine", _entry({"kind": "source", "tree": "/src/qemu",
                                                    "firmware": "/fw"}))
    assert (plain.tree, plain.firmware) == (Path("/src/qemu"), Path("/fw"))


@pytest.mark.parametrize(("data", "message"), [
    ({"kind": "source"}, r"builds\.mine\.tree: give either `tree:` .* or `debian:`"),
    ({"kind": "source", "tree": "/t", "debian": {"suite": "sid"}}, r"builds\.mine\.tree: give either"),
    ({"kind": "source", "debian": {"version": "1"}}, r"builds\.mine\.debian\.suite: is required"),
    ({"kind": "source", "debian": {"suite": "sid", "verison": "1"}},
     r"debian\.verison: unknown key; did you mean 'version'"),
    ({"kind": "source", "tree": "/t", "firmware": {"root": "trixie"}}, r"firmware\.root: unknown key"),
])
def test_a_source_entry_that_names_no_tree_or_a_bad_key_is_refused_by_name(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SourceBuild.from_matrix("mine", _entry(data))
