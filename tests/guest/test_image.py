"""The golden image: cache lookup, error reporting, and a reproducible real build."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cache
from harness.guest import image
from harness.guest.image import GoldenImage, GuestImageError, ensure_golden_image, recipe_key
from harness.guest.protocol import PROTOCOL_VERSION

BUILD_PY = image.GOLDEN_DIR / "build.py"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_recipe(into: Path) -> Path:
    into.mkdir()
    for name in image.RECIPE_INPUTS:
        shutil.copy2(image.GOLDEN_DIR / name, into / name)
    return into


def fake_image(directory: Path, kernel: bytes = b"kernel") -> None:
    """A cache entry (sealed, as after a build) with a valid manifest but tiny stand-in files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vmlinux").write_bytes(kernel)
    (directory / "initrd.gz").write_bytes(b"initrd")
    manifest = {
        "image_id": "golden-test-000000000000",
        "kernel_cmdline": "console=hvc0 quiet",
        "files": {name: {"sha256": sha256(directory / name)} for name in ("vmlinux", "initrd.gz")},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    cache.seal(directory, image.IMAGE_FILES)


def build_prerequisites_missing() -> str | None:
    if os.geteuid() != 0:
        return "the golden image build needs root (dpkg --add-architecture, mknod /dev/console)"
    recipe = json.loads((image.GOLDEN_DIR / "recipe.json").read_text())
    for tool in ("apt-get", "dpkg-deb", "cpio", "gzip", recipe["compiler"]["command"]):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class TestRecipeKey:
    def test_stable_and_sensitive_to_every_input(self, tmp_path: Path) -> None:
        golden = copy_recipe(tmp_path / "golden")
        key = recipe_key(golden)
        assert key == recipe_key(image.GOLDEN_DIR)
        assert len(key) == 16
        for name in image.RECIPE_INPUTS:
            original = (golden / name).read_bytes()
            (golden / name).write_bytes(original + b"\n")
            assert recipe_key(golden) != key, name
            (golden / name).write_bytes(original)

    def test_docs_are_not_inputs(self, tmp_path: Path) -> None:
        golden = copy_recipe(tmp_path / "golden")
        key = recipe_key(golden)
        (golden / "PROTOCOL.md").write_text("changed")
        assert recipe_key(golden) == key


class TestAgentSource:
    def test_speaks_the_harness_protocol_version(self) -> None:
        source = (image.GOLDEN_DIR / "agent.c").read_text()
        version = re.search(r"^#define PROTOCOL_VERSION (\d+)$", source, re.M)
        assert version is not None and int(version[1]) == PROTOCOL_VERSION
        doc = (image.GOLDEN_DIR / "PROTOCOL.md").read_text()
        assert doc.startswith(f"# goldmig guest agent: console line protocol (version {PROTOCOL_VERSION})")

    def test_compiles_without_warnings(self, tmp_path: Path) -> None:
        """The image build only logs compiler warnings; here they fail."""
        compiler = json.loads((image.GOLDEN_DIR / "recipe.json").read_text())["compiler"]
        if shutil.which(compiler["command"]) is None:
            pytest.skip(f"{compiler['command']} is not installed")
        proc = subprocess.run(
            [compiler["command"], *compiler["flags"], "-Werror", "-o", str(tmp_path / "agent"),
             str(image.GOLDEN_DIR / "agent.c")],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr


class TestCache:
    def test_cached_image_is_used_without_building(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fake_image(tmp_path / recipe_key())
        monkeypatch.setattr(image, "_build", lambda target: pytest.fail("rebuilt"))
        got = ensure_golden_image(tmp_path)
        assert got == GoldenImage(
            kernel=tmp_path / recipe_key() / "vmlinux",
            initrd=tmp_path / recipe_key() / "initrd.gz",
            manifest=got.manifest,
            image_id="golden-test-000000000000",
            kernel_cmdline="console=hvc0 quiet",
        )

    @pytest.mark.parametrize(("name", "damage", "why"), [
        ("initrd.gz", b"changed", "initrd.gz: size 7 bytes, but {key}.sums.json records 6"),
        ("vmlinux", b"kernek", "vmlinux: sha256 "),
        ("manifest.json", b"{", "manifest.json: size 1 bytes"),
    ])
    def test_damaged_file_is_rebuilt_with_a_warning(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        name: str, damage: bytes, why: str,
    ) -> None:
        target = tmp_path / recipe_key()
        fake_image(target)
        (target / name).write_bytes(damage)
        monkeypatch.setattr(image, "_build", lambda into: fake_image(into, b"rebuilt"))
        got = ensure_golden_image(tmp_path)
        assert got.kernel.read_bytes() == b"rebuilt"
        assert cache.damage(target) is None
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"goldmig: cache: {target}: {why.format(key=recipe_key())}"), line
        assert line.endswith("; remaking it")

    def test_image_without_recorded_hashes_is_rebuilt(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An image cached before goldmig recorded hashes is not trusted."""
        fake_image(tmp_path / recipe_key())
        cache.sums_path(tmp_path / recipe_key()).unlink()
        monkeypatch.setattr(image, "_build", lambda into: fake_image(into, b"rebuilt"))
        assert ensure_golden_image(tmp_path).kernel.read_bytes() == b"rebuilt"
        assert f"{recipe_key()}.sums.json is missing" in capsys.readouterr().err

    def test_unreadable_manifest_from_the_build_is_reported(self, tmp_path: Path) -> None:
        fake_image(tmp_path / recipe_key())
        (tmp_path / recipe_key() / "manifest.json").write_text("{")
        cache.seal(tmp_path / recipe_key(), image.IMAGE_FILES)  # as build.py left it
        with pytest.raises(GuestImageError, match=r"unreadable manifest .* `rm -rf /"):
            ensure_golden_image(tmp_path)

    def test_build_failure_carries_build_py_message(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        golden = copy_recipe(tmp_path / "golden")
        (golden / "build.py").write_text(
            "import sys\n"
            "print('build.py: downloading things', file=sys.stderr)\n"
            "print('build.py: error: compiler cc-x not found. Install it.', file=sys.stderr)\n"
            "sys.exit(1)\n"
        )
        monkeypatch.setattr(image, "GOLDEN_DIR", golden)
        with pytest.raises(GuestImageError) as err:
            ensure_golden_image(tmp_path / "cache")
        assert str(err.value) == (
            "golden image build failed (exit 1): compiler cc-x not found. Install it."
        )
        assert not (tmp_path / "cache" / recipe_key(golden)).exists()


def run_build(golden: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(golden / "build.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@pytest.mark.slow
class TestRealBuild:
    @pytest.fixture(autouse=True)
    def _prerequisites(self) -> None:
        missing = build_prerequisites_missing()
        if missing:
            pytest.skip(missing)

    def test_two_builds_are_byte_identical(self, tmp_path: Path) -> None:
        direct = tmp_path / "direct"
        proc = run_build(image.GOLDEN_DIR, direct)
        assert proc.returncode == 0, proc.stderr

        cached = ensure_golden_image(tmp_path / "cache")
        for name in ("vmlinux", "initrd.gz", "manifest.json"):
            assert sha256(direct / name) == sha256(cached.kernel.parent / name), name
        manifest = json.loads((direct / "manifest.json").read_text())
        assert manifest == cached.manifest
        assert sorted(p.name for p in direct.iterdir()) == ["initrd.gz", "manifest.json", "vmlinux"]

        # What the manifest promises about the image.
        kver = manifest["kernel_version"]
        assert kver.startswith("6.1.0-") and kver.endswith("-powerpc64le")
        both = (direct / "vmlinux").read_bytes() + (direct / "initrd.gz").read_bytes()
        assert cached.image_id == f"golden-{kver}-{hashlib.sha256(both).hexdigest()[:12]}"
        assert cached.kernel_cmdline == "console=hvc0 quiet"
        assert {p["role"] for p in manifest["packages"]} == {"kernel", "busybox"}
        for name in ("vmlinux", "initrd.gz"):
            assert manifest["files"][name]["sha256"] == sha256(direct / name)
        assert manifest["files"]["agent.c"]["sha256"] == sha256(image.GOLDEN_DIR / "agent.c")

        # A second call finds the cache and does not rebuild.
        stamp = (cached.kernel.parent / "manifest.json").stat().st_mtime_ns
        assert ensure_golden_image(tmp_path / "cache") == cached
        assert (cached.kernel.parent / "manifest.json").stat().st_mtime_ns == stamp

    def test_damaged_cached_image_is_rebuilt_identical(
        self, user_cache: Path, private_cache: Path, golden_image: Path,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """A copy of the user's image with one kernel byte changed: build.py makes it again."""
        if (user_cache / "debs").is_dir():
            shutil.copytree(user_cache / "debs", private_cache / "debs")  # build.py's download cache
        target = golden_image
        good = {name: sha256(target / name) for name in image.IMAGE_FILES}
        with (target / "vmlinux").open("r+b") as f:
            f.seek(1 << 20)
            byte = f.read(1)[0]
            f.seek(1 << 20)
            f.write(bytes([byte ^ 0x01]))

        got = ensure_golden_image()

        assert got.kernel == target / "vmlinux"
        assert {name: sha256(target / name) for name in image.IMAGE_FILES} == good
        assert capfd.readouterr().err.startswith(f"goldmig: cache: {target}: vmlinux: sha256 ")

    def test_series_outside_the_pin_is_refused(self, tmp_path: Path) -> None:
        golden = copy_recipe(tmp_path / "golden")
        recipe = json.loads((golden / "recipe.json").read_text())
        recipe["kernel"]["version_prefix"] = "5.10."
        (golden / "recipe.json").write_text(json.dumps(recipe))
        proc = run_build(golden, tmp_path / "out")
        assert proc.returncode == 1
        assert "series mismatch" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()
