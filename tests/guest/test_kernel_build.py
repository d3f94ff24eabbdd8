"""The golden kernel's build script (guests/golden/kernel/build_kernel.py), without building.

Compiling a kernel takes minutes, so nothing here does: the fragment, kernel.json, the
config check, the manifest and the command line are tested on their own, and a kernel
that was built already (``build_kernel.py`` with its default ``--out``) is checked
against its manifest when it is in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness.guest import image

KERNEL_DIR = image.GOLDEN_DIR / "kernel"
SCRIPT = KERNEL_DIR / "build_kernel.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("goldmig_build_kernel", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bk = load_script()


def copy_tree(into: Path) -> Path:
    """guests/golden's build inputs in a private dir: golden/{build.py,recipe.json,kernel/*}."""
    (into / "kernel").mkdir(parents=True)
    for name in ("build.py", "recipe.json"):
        shutil.copy2(image.GOLDEN_DIR / name, into / name)
    for name in ("build_kernel.py", "kernel.json", "goldmig.config"):
        shutil.copy2(KERNEL_DIR / name, into / "kernel" / name)
    return into / "kernel"


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )


class TestFragment:
    def test_parses_and_asks_for_what_the_scenarios_need(self) -> None:
        wanted = bk.parse_config(
            (KERNEL_DIR / "goldmig.config").read_text(), where="goldmig.config"
        )
        for option in (
            "CONFIG_PPC_PSERIES", "CONFIG_CPU_LITTLE_ENDIAN", "CONFIG_PPC_XIVE_SPAPR",
            "CONFIG_PPC_XICS", "CONFIG_SMP", "CONFIG_HOTPLUG_CPU", "CONFIG_MEMORY_HOTPLUG",
            "CONFIG_MEMORY_HOTREMOVE", "CONFIG_HOTPLUG_PCI_RPA", "CONFIG_HOTPLUG_PCI_RPA_DLPAR",
            "CONFIG_PCI_MSI", "CONFIG_VIRTIO_PCI", "CONFIG_HW_RANDOM_VIRTIO", "CONFIG_VIRTIO_NET",
            "CONFIG_VIRTIO_BLK", "CONFIG_HVC_CONSOLE", "CONFIG_DEVTMPFS", "CONFIG_BLK_DEV_INITRD",
            "CONFIG_RD_GZIP", "CONFIG_RTAS_PROC", "CONFIG_SOFTLOCKUP_DETECTOR",
            "CONFIG_HARDLOCKUP_DETECTOR", "CONFIG_DETECT_HUNG_TASK",
        ):
            assert wanted.get(option) == "y", option
        assert "CONFIG_MODULES" in wanted and wanted["CONFIG_MODULES"] is None
        matrix_maxcpus = 64  # harness.matrix.load.MAXCPUS' upper bound
        assert int(wanted["CONFIG_NR_CPUS"] or 0) >= matrix_maxcpus

    @pytest.mark.parametrize(("text", "error"), [
        ("CONFIG_A=y\nCONFIG_A=n\n", "x:2: CONFIG_A is given twice"),
        ("CONFIG_A=y\nCONFIG_B y\n", "x:2: not a config line: 'CONFIG_B y'"),
        ("# CONFIG_A is not set\nCONFIG_A=y\n", "x:2: CONFIG_A is given twice"),
    ])
    def test_bad_lines_are_named(self, text: str, error: str) -> None:
        with pytest.raises(bk.BuildError, match=error):
            bk.parse_config(text, where="x")

    def test_comments_and_unset_options(self) -> None:
        parsed = bk.parse_config(
            "# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n", where="x"
        )
        assert parsed == {"CONFIG_A": "y", "CONFIG_B": None, "CONFIG_C": '"x y"'}


class TestConfigCheck:
    def test_each_missed_option_is_named(self) -> None:
        wanted = {"CONFIG_A": "y", "CONFIG_B": "y", "CONFIG_C": None, "CONFIG_D": "64",
                  "CONFIG_E": "y", "CONFIG_F": None}
        final = {"CONFIG_A": "y", "CONFIG_B": None, "CONFIG_C": "y", "CONFIG_D": "32"}
        assert bk.config_mismatches(wanted, final) == [
            "CONFIG_B=y is not set (a dependency is off, or it is selected off)",
            "CONFIG_C should be unset but is y",
            "CONFIG_D=64 is 32",
            "CONFIG_E=y is missing (a dependency is off, or no such option)",
        ]

    def test_all_held(self) -> None:
        assert bk.config_mismatches({"CONFIG_A": "y", "CONFIG_B": None}, {"CONFIG_A": "y"}) == []


class TestKernelRecipe:
    def test_pinned_inputs(self) -> None:
        recipe = bk.KernelRecipe.load()
        assert recipe.package == "linux-source-6.1"
        assert recipe.version.startswith("6.1.")
        assert recipe.fragment == KERNEL_DIR / "goldmig.config"
        golden = json.loads((image.GOLDEN_DIR / "recipe.json").read_text())
        assert recipe.source_date_epoch == golden["source_date_epoch"]
        env = recipe.make_env()
        assert env["KBUILD_BUILD_USER"] == env["KBUILD_BUILD_HOST"] == "goldmig"
        assert env["KBUILD_BUILD_VERSION"] == "1"
        assert env["SOURCE_DATE_EPOCH"] == str(golden["source_date_epoch"])
        assert env["ARCH"] == "powerpc" and env["CROSS_COMPILE"] == "powerpc64le-linux-gnu-"

    def test_timestamp_is_what_date_prints(self, tmp_path: Path) -> None:
        """gen_initramfs.sh reads KBUILD_BUILD_TIMESTAMP back with `date -d`."""
        recipe = bk.KernelRecipe.load()
        if shutil.which("date"):
            back = subprocess.run(
                ["date", "-d", recipe.timestamp, "+%s"], capture_output=True, text=True, check=True,
                env={**os.environ, "LC_ALL": "C"},
            ).stdout.strip()
            assert int(back) == recipe.source_date_epoch

    @pytest.mark.parametrize(("change", "error"), [
        (lambda k: k.update(format=2), "unsupported 'format'"),
        (lambda k: k["source"].update(sha256="abc"), "'source.sha256' must be 64"),
        (lambda k: k["source"].update(tarball="../x.tar.xz"), "'source.tarball' must be"),
        (lambda k: k["config"].update(base="defconfig"), "'config.base' must be allnoconfig"),
        (lambda k: k.pop("cross_compile"), "missing key 'cross_compile'"),
        (lambda k: k.update(build_user="a b"), "'build_user' may hold only"),
        (lambda k: k.update(build_version="one"), "'build_version' must be a decimal"),
    ])
    def test_invalid_recipe_is_named(self, tmp_path: Path, change: Any, error: str) -> None:
        raw = json.loads((KERNEL_DIR / "kernel.json").read_text())
        change(raw)
        path = tmp_path / "kernel.json"
        path.write_text(json.dumps(raw))
        with pytest.raises(bk.BuildError, match=error):
            bk.KernelRecipe.load(path, image.GOLDEN_DIR / "recipe.json")

    def test_missing_epoch_is_named(self, tmp_path: Path) -> None:
        (tmp_path / "recipe.json").write_text("{}")
        with pytest.raises(bk.BuildError, match="cannot read source_date_epoch"):
            bk.KernelRecipe.load(KERNEL_DIR / "kernel.json", tmp_path / "recipe.json")


class TestCommandLine:
    def test_print_key(self) -> None:
        proc = run_script(SCRIPT, "--print-key")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == bk.input_key(bk.KernelRecipe.load())
        assert len(proc.stdout.strip()) == 16

    def test_key_follows_every_input(self, tmp_path: Path) -> None:
        kernel = copy_tree(tmp_path / "golden")
        key = run_script(kernel / "build_kernel.py", "--print-key").stdout
        assert key.strip() == bk.input_key(bk.KernelRecipe.load())
        for path in (kernel / "goldmig.config", kernel / "kernel.json", kernel.parent / "recipe.json"):
            original = path.read_text()
            if path.name == "recipe.json":
                path.write_text(original.replace('"source_date_epoch": ', '"source_date_epoch": 1'))
            else:
                path.write_text(original.replace("\n", "\n\n", 1))
            assert run_script(kernel / "build_kernel.py", "--print-key").stdout != key, path.name
            path.write_text(original)

    def test_bad_recipe_is_an_error_line_not_a_traceback(self, tmp_path: Path) -> None:
        kernel = copy_tree(tmp_path / "golden")
        (kernel / "kernel.json").write_text("{not json")
        proc = run_script(kernel / "build_kernel.py", "--print-key")
        assert proc.returncode == 1
        assert proc.stderr.startswith("build_kernel.py: error: ")
        assert "is not a valid kernel recipe" in proc.stderr and "Traceback" not in proc.stderr

    @pytest.mark.parametrize(("args", "error"), [
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--nice", "20"], "--nice must be between 0 and 19"),
    ])
    def test_bad_arguments(self, args: list[str], error: str) -> None:
        proc = run_script(SCRIPT, *args)
        assert proc.returncode == 2 and error in proc.stderr


def fake_build(directory: Path) -> dict[str, Any]:
    """A built-kernel directory with stand-in files and the manifest build_kernel.py writes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vmlinux").write_bytes(b"\x7fELF not really a kernel")
    (directory / "config").write_text("CONFIG_PPC64=y\n")
    manifest = bk.make_manifest(
        bk.KernelRecipe.load(),
        source={"package": "linux-source-6.1", "version": "6.1.0-0", "deb": "x.deb",
                "deb_sha256": "0" * 64, "tarball": "usr/src/x.tar.xz"},
        kernel_release="6.1.0-goldmig",
        toolchain={"compiler": "cc 1.0"},
        files={"vmlinux": directory / "vmlinux", "config": directory / "config"},
    )
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


class TestManifest:
    def test_format(self, tmp_path: Path) -> None:
        manifest = fake_build(tmp_path)
        vmlinux_sha = hashlib.sha256((tmp_path / "vmlinux").read_bytes()).hexdigest()
        assert manifest["format"] == 1
        assert manifest["kernel_id"] == f"goldmig-6.1.0-goldmig-{vmlinux_sha[:12]}"
        assert manifest["files"]["vmlinux"] == {"sha256": vmlinux_sha, "size": 24}
        assert manifest["config"]["config_sha256"] == manifest["files"]["config"]["sha256"]
        assert manifest["config"]["fragment_sha256"] == hashlib.sha256(
            (KERNEL_DIR / "goldmig.config").read_bytes()).hexdigest()
        assert manifest["build"]["env"]["KBUILD_BUILD_USER"] == "goldmig"
        assert manifest["build"]["toolchain"] == {"compiler": "cc 1.0"}
        assert bk.verify_manifest(tmp_path) == json.loads((tmp_path / "manifest.json").read_text())

    @pytest.mark.parametrize(("name", "damage", "error"), [
        ("vmlinux", b"\x7fELF not really a kernek", "vmlinux has sha256"),
        ("config", None, "config is missing"),
        ("manifest.json", b"{", "manifest.json is unreadable"),
    ])
    def test_damage_is_named(self, tmp_path: Path, name: str, damage: bytes | None, error: str) -> None:
        fake_build(tmp_path)
        if damage is None:
            (tmp_path / name).unlink()
        else:
            (tmp_path / name).write_bytes(damage)
        with pytest.raises(bk.BuildError, match=error):
            bk.verify_manifest(tmp_path)


def built_kernel() -> Path | None:
    """The kernel build_kernel.py would build now, if it is in the cache already."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = base / "goldmig" / "kernels" / bk.input_key(bk.KernelRecipe.load())
    return directory if (directory / "manifest.json").is_file() else None


@pytest.mark.skipif(built_kernel() is None, reason="no golden kernel built for these inputs "
                    "(python3 guests/golden/kernel/build_kernel.py builds it, in minutes)")
def test_built_kernel_matches_its_manifest() -> None:
    directory = built_kernel()
    assert directory is not None
    manifest = bk.verify_manifest(directory)
    recipe = bk.KernelRecipe.load()
    assert manifest["kernel_json_sha256"] == recipe.sha256
    assert manifest["source"]["deb_sha256"] == recipe.deb_sha256
    assert manifest["source"]["version"] == recipe.version
    final = bk.parse_config((directory / "config").read_text(), where="config")
    wanted = bk.parse_config(recipe.fragment.read_text(), where=recipe.fragment.name)
    assert bk.config_mismatches(wanted, final) == []
    assert (directory / "vmlinux").read_bytes()[:4] == b"\x7fELF"
