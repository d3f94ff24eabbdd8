"""Cached build artifacts: introspection results are asked again when damaged; a damaged
debootstrap root is refused with the command that clears it.

A private cache (``XDG_CACHE_HOME`` in the test's temp dir) throughout; roots
are small fakes holding only what the check reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import cache
from harness.builds import debian
from harness.builds.debian import ensure_suite_root
from harness.builds.debian_suite import DebianSuiteBuild
from harness.builds.host_package import HostPackageBuild
from harness.builds.introspect import introspect
from harness.errors import BuildError, CacheError
from harness.matrix.reader import Reader


@pytest.fixture(autouse=True)
def _private(private_cache: Path) -> None:
    """Every test here damages cached artifacts: in a private cache."""


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/usr/bin/qemu-system-ppc64", os.X_OK),
                    reason="needs the host's QEMU 7.2 (make setup)")
def test_damaged_introspection_is_asked_again(private_cache: Path, capfd: pytest.CaptureFixture[str]) -> None:
    build = HostPackageBuild("qemu-7.2").provision()
    info = introspect(build)
    (entry,) = (private_cache / "introspect").glob("qemu-7.2-????????????????.json")
    entry.write_text(entry.read_text().replace('"pseries-7.2"', '"pseries-7.3"'))
    capfd.readouterr()

    assert introspect(build) == info
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(f"goldmig: cache: {entry}: sha256 ") and line.endswith("; remaking it")
    assert cache.damage(entry) is None


def fake_root(private_cache: Path, suite: str) -> Path:
    """A root made by goldmig before it recorded hashes, reduced to what the check reads."""
    root = private_cache / "roots" / suite
    fill_root(root, b"\x7fELF qemu-system-ppc64 ")
    (root / ".goldmig-complete").write_text(suite + "\n")
    return root


def fill_root(root: Path, qemu: bytes) -> None:
    """What debootstrap leaves that the check reads: QEMU, firmware, dpkg's status and the
    md5sums of the package files."""
    files = {
        debian.QEMU_BINARY: qemu * 1000,
        f"{debian.FIRMWARE_DIR}/slof.bin": b"SLOF" * 500,
        f"{debian.FIRMWARE_DIR}/vof.bin": b"VOF" * 100,
        f"{debian.FIRMWARE_DIR}/keymaps/en-us": b"include common\n",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (root / f"{debian.FIRMWARE_DIR}/bios-microvm.bin").symlink_to("/nonexistent")
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / debian.DPKG_STATUS).write_text("Package: qemu-system-ppc\nStatus: install ok installed\n"
                                           "Version: 1:10.0.13+ds-0+deb13u1\n")
    (root / "var/lib/dpkg/info/qemu-system-ppc.md5sums").write_text(
        "".join(f"{hashlib.md5(c).hexdigest()}  {n}\n" for n, c in files.items()))


class TestRoot:
    def test_sealed_on_first_use_and_then_checked(self, private_cache: Path) -> None:
        """A root made before goldmig recorded hashes is checked against dpkg's md5sums, then sealed."""
        root = fake_root(private_cache, "fakesuite")
        assert ensure_suite_root("fakesuite") == root
        sums = json.loads(cache.sums_path(root).read_text())
        assert sorted(sums["files"]) == [
            "usr/bin/qemu-system-ppc64", "usr/share/qemu/keymaps/en-us", "usr/share/qemu/slof.bin",
            "usr/share/qemu/vof.bin", "var/lib/dpkg/status",
        ]
        assert sums["meta"] == {"suite": "fakesuite", "qemu-system-ppc": "1:10.0.13+ds-0+deb13u1"}
        assert ensure_suite_root("fakesuite") == root

    @pytest.mark.parametrize("name", [debian.QEMU_BINARY, "usr/share/qemu/slof.bin", debian.DPKG_STATUS])
    def test_altered_file_is_refused_naming_the_root_and_the_rm_command(
        self, private_cache: Path, name: str
    ) -> None:
        root = fake_root(private_cache, "fakesuite")
        ensure_suite_root("fakesuite")
        path = root / name
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[5] ^= 0x01
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only ctime moved

        with pytest.raises(CacheError) as err:
            ensure_suite_root("fakesuite")
        clear = shlex.join(["rm", "-rf", str(root), str(root) + ".sums.json"])
        assert re.match(rf"Debian suite root {re.escape(str(root))} \(fakesuite\) is damaged: "
                        rf"{re.escape(name)}: sha256 \w+\.\.\., but fakesuite.sums.json records",
                        str(err.value))
        assert f"remove it with `{clear}` and the next run debootstraps it again" in str(err.value)

    def test_file_unlike_its_package_is_refused_before_sealing(self, private_cache: Path) -> None:
        root = fake_root(private_cache, "fakesuite")
        (root / debian.QEMU_BINARY).write_bytes(b"not what the package shipped")
        with pytest.raises(CacheError, match=r"usr/bin/qemu-system-ppc64 does not match the md5sum dpkg "
                                             r"recorded from its package.*`rm -rf "):
            ensure_suite_root("fakesuite")
        assert not cache.sums_path(root).exists()

    def test_a_root_removed_without_its_hashes_is_made_and_sealed_again(
        self, private_cache: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Half the rm command (the root, not its sums): the next debootstrap is not taken for damage."""
        root = fake_root(private_cache, "fakesuite")
        ensure_suite_root("fakesuite")
        shutil.rmtree(root)

        run = subprocess.run

        def debootstrap(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
            if cmd[0] != "debootstrap":  # dpkg-query
                return run(cmd, **kw)
            fill_root(Path(cmd[-2]), b"\x7fELF a newer qemu-system-ppc64 ")
            return subprocess.CompletedProcess(cmd, 0, "", "")

        monkeypatch.setattr(debian.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
        monkeypatch.setattr(debian.subprocess, "run", debootstrap)
        assert ensure_suite_root("fakesuite") == root
        assert b"newer" in (root / debian.QEMU_BINARY).read_bytes()
        assert cache.damage(root) is None


class TestBackports:
    def test_a_backports_build_is_a_root_of_its_own(self, private_cache: Path) -> None:
        entry = Reader("matrix.yaml", {"kind": "debian", "suite": "trixie", "backports": True},
                       "builds.new")
        build = DebianSuiteBuild.from_matrix("new", entry)
        assert build.backports
        roots = private_cache / "roots"
        assert debian.suite_root_path("trixie", backports=True) == roots / "trixie+backports"
        assert debian.suite_root_path("trixie") == roots / "trixie"

    def test_its_qemu_comes_from_the_suites_backports(self, private_cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """After debootstrap, apt in the new root (its own /proc) installs from <suite>-backports."""
        run = subprocess.run
        commands: list[str] = []

        def fake(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
            if cmd[0] == "dpkg-query":
                return run(cmd, **kw)
            commands.append(shlex.join(cmd))
            if cmd[0] == "debootstrap":
                fill_root(Path(cmd[-2]), b"\x7fELF qemu-system-ppc64 ")
                (Path(cmd[-2]) / "etc/apt/sources.list.d").mkdir(parents=True)
            return subprocess.CompletedProcess(cmd, 0, "", "")

        monkeypatch.setattr(debian.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
        monkeypatch.setattr(debian.subprocess, "run", fake)
        root = ensure_suite_root("trixie", backports=True)
        assert (root / "etc/apt/sources.list.d/backports.list").read_text() == \
            "deb http://deb.debian.org/debian trixie-backports main\n"
        assert commands[0].startswith("debootstrap ") and " trixie " in commands[0]
        assert "-t trixie-backports qemu-system-ppc" in commands[1] and "mount -t proc" in commands[1]

    def test_a_suite_without_backports_is_refused_with_apts_last_lines(
            self, private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        def fake(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
            if cmd[0] == "debootstrap":
                (Path(cmd[-2]) / "etc/apt/sources.list.d").mkdir(parents=True)
                return subprocess.CompletedProcess(cmd, 0, "", "")
            return subprocess.CompletedProcess(cmd, 100, "", "E: The value 'nosuch-backports' is invalid")

        monkeypatch.setattr(debian.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
        monkeypatch.setattr(debian.subprocess, "run", fake)
        with pytest.raises(BuildError, match=r"'nosuch' with backports: installing qemu-system-ppc from "
                                             r"nosuch-backports failed \(exit 100\)(.|\n)*is invalid"):
            ensure_suite_root("nosuch", backports=True)
        left = [p.name for p in (private_cache / "roots").iterdir() if p.is_dir()]
        assert left == [], "no half-made root is left"
