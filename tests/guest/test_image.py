"""The golden image: cache lookup per kernel, error reporting, `goldmig guest`, and a reproducible
real build."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness import cache, cli
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
    shutil.copytree(image.GOLDEN_DIR / image.KERNEL_DIR, into / image.KERNEL_DIR,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return into


def fake_manifest(directory: Path, kind: str = "goldmig") -> dict[str, object]:
    """The manifest build.py writes, reduced to what the harness reads, for either kernel."""
    manifest: dict[str, object] = {
        "image_id": "golden-test-000000000000",
        "kernel_cmdline": "console=hvc0 quiet",
        "files": {name: {"sha256": sha256(directory / name)} for name in ("vmlinux", "initrd.gz")},
    }
    if kind == "goldmig":
        manifest["kernel_version"] = "6.1.192-goldmig"
        manifest["kernel"] = {
            "kind": "goldmig", "kernel_id": "goldmig-6.1.192-goldmig-e9fadc1e4032",
            "source": {"package": "linux-source-6.1", "version": "6.1.192-3"},
            "config": {"base": "allnoconfig", "fragment": "goldmig.config"},
            "build": {"toolchain": {"compiler": "powerpc64le-linux-gnu-gcc 12.2.0"}},
        }
        manifest["packages"] = [{"role": "busybox", "name": "busybox-static", "version": "1:1.35"}]
    else:
        manifest["kernel_version"] = "6.1.0-57-powerpc64le"
        manifest["packages"] = [
            {"role": "kernel", "name": "linux-image-6.1.0-57-powerpc64le", "version": "6.1.192-3",
             "deb": "linux-image-6.1.0-57-powerpc64le_6.1.192-3_ppc64el.deb", "deb_sha256": "0" * 64},
            {"role": "busybox", "name": "busybox-static", "version": "1:1.35"},
        ]
    return manifest


def fake_image(directory: Path, kernel: bytes = b"kernel", kind: str = "goldmig") -> None:
    """A cache entry (sealed, as after a build) with a valid manifest but tiny stand-in files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vmlinux").write_bytes(kernel)
    (directory / "initrd.gz").write_bytes(b"initrd")
    (directory / "manifest.json").write_text(json.dumps(fake_manifest(directory, kind)))
    cache.seal(directory, image.IMAGE_FILES)


def build_prerequisites_missing() -> str | None:
    if os.geteuid() != 0:
        return "the golden image build needs root (dpkg --add-architecture, mknod /dev/console)"
    recipe = json.loads((image.GOLDEN_DIR / "recipe.json").read_text())
    for tool in ("apt-get", "dpkg-deb", "cpio", "gzip", recipe["compiler"]["command"]):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


KERNEL_INPUTS = ("kernel/kernel.json", "kernel/goldmig.config", "kernel/build_kernel.py")


class TestRecipeKey:
    @pytest.mark.parametrize("kernel", image.KERNELS)
    def test_stable_and_sensitive_to_every_input(self, tmp_path: Path, kernel: str) -> None:
        golden = copy_recipe(tmp_path / "golden")
        key = recipe_key(golden, kernel)
        assert key == recipe_key(image.GOLDEN_DIR, kernel)
        assert re.fullmatch(rf"{kernel}-[0-9a-f]{{16}}", key)
        for name in image.RECIPE_INPUTS + KERNEL_INPUTS:
            original = (golden / name).read_bytes()
            (golden / name).write_bytes(original + b"\n")
            # Our kernel's inputs key the goldmig image alone: Debian's kernel does not read them.
            changes = kernel == "goldmig" or not name.startswith("kernel/")
            assert (recipe_key(golden, kernel) != key) == changes, name
            (golden / name).write_bytes(original)

    def test_each_kernel_has_its_own_image(self) -> None:
        assert image.DEFAULT_KERNEL == image.KERNELS[0] == "goldmig"
        assert recipe_key() == recipe_key(image.GOLDEN_DIR, "goldmig")
        assert recipe_key(kernel="goldmig") != recipe_key(kernel="debian")

    def test_docs_are_not_inputs(self, tmp_path: Path) -> None:
        golden = copy_recipe(tmp_path / "golden")
        keys = [recipe_key(golden, kernel) for kernel in image.KERNELS]
        (golden / "PROTOCOL.md").write_text("changed")
        assert [recipe_key(golden, kernel) for kernel in image.KERNELS] == keys


def load_build_py() -> ModuleType:
    spec = importlib.util.spec_from_file_location("goldmig_build_py_under_test", BUILD_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


build_py = load_build_py()


def fake_kernel(directory: Path) -> dict[str, object]:
    """A directory as build_kernel.py leaves it, with stand-in files."""
    directory.mkdir(parents=True)
    (directory / "vmlinux").write_bytes(b"vmlinux")
    (directory / "config").write_text("CONFIG_PPC64=y\n")
    manifest: dict[str, object] = {
        "format": 1, "kernel_id": "goldmig-6.1.0-goldmig-0123", "kernel_release": "6.1.0-goldmig",
        "source": {"package": "linux-source-6.1"}, "config": {"fragment": "goldmig.config"},
        "build": {"toolchain": {"compiler": "cc"}}, "kernel_json_sha256": "1" * 64,
        "build_kernel_py_sha256": "2" * 64,
        "files": {name: {"sha256": sha256(directory / name), "size": (directory / name).stat().st_size}
                  for name in ("vmlinux", "config")},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


class TestBuildPyKernel:
    """build.py's side of our kernel: the cached kernel it reuses, what it records of it."""

    def test_kernel_choice_defaults_to_ours(self) -> None:
        assert build_py.KERNELS == image.KERNELS

    def test_a_kernel_is_used_only_when_it_matches_its_manifest(self, tmp_path: Path) -> None:
        k = tmp_path / "k"
        assert build_py.kernel_damage(k) == "not built yet"
        fake_kernel(k)
        assert build_py.kernel_damage(k) is None
        (k / "vmlinux").write_bytes(b"vmlinuX")
        assert build_py.kernel_damage(k) == "vmlinux does not match its manifest"
        (k / "vmlinux").unlink()
        assert build_py.kernel_damage(k) == "vmlinux is missing"
        (k / "manifest.json").write_text("{}")
        assert "manifest.json is unreadable" in build_py.kernel_damage(k)

    def test_the_image_names_the_kernel_it_boots(self, tmp_path: Path) -> None:
        manifest = fake_kernel(tmp_path / "k")
        entry = build_py.GoldmigKernel(tmp_path / "k", "d55b0cbc5d1d6e44", manifest).image_entry()
        assert entry == {
            "kind": "goldmig", "kernel_id": "goldmig-6.1.0-goldmig-0123",
            "kernel_release": "6.1.0-goldmig", "build_key": "d55b0cbc5d1d6e44",
            "vmlinux_sha256": sha256(tmp_path / "k" / "vmlinux"),
            "source": {"package": "linux-source-6.1"}, "config": {"fragment": "goldmig.config"},
            "build": {"toolchain": {"compiler": "cc"}}, "kernel_json_sha256": "1" * 64,
            "build_kernel_py_sha256": "2" * 64,
        }

    def test_a_failed_kernel_build_is_quoted_and_its_progress_passed_on(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        script = ("import sys\nprint('build_kernel.py: compiling', file=sys.stderr)\n"
                  "print('build_kernel.py: error: make failed. See the log.', file=sys.stderr)\n"
                  "sys.exit(1)\n")
        with pytest.raises(build_py.BuildError) as err:
            build_py.run_streaming([sys.executable, "-c", script], what="building the golden kernel",
                                   marker="build_kernel.py: error: ")
        assert str(err.value) == "building the golden kernel failed (exit 1): make failed. See the log."
        assert capsys.readouterr().err.startswith("build_kernel.py: compiling\n")


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
        monkeypatch.setattr(image, "_build", lambda target, kernel: pytest.fail("rebuilt"))
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
        monkeypatch.setattr(image, "_build", lambda into, kernel: fake_image(into, b"rebuilt"))
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
        monkeypatch.setattr(image, "_build", lambda into, kernel: fake_image(into, b"rebuilt"))
        assert ensure_golden_image(tmp_path).kernel.read_bytes() == b"rebuilt"
        assert f"{recipe_key()}.sums.json is missing" in capsys.readouterr().err

    def test_the_two_kernels_are_cached_side_by_side(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        built: list[tuple[str, str]] = []

        def build(into: Path, kernel: str) -> None:
            built.append((into.name, kernel))
            fake_image(into, kernel.encode(), kind=kernel)

        monkeypatch.setattr(image, "_build", build)
        ours, debian = ensure_golden_image(tmp_path), ensure_golden_image(tmp_path, kernel="debian")
        assert built == [(recipe_key(kernel="goldmig"), "goldmig"),
                         (recipe_key(kernel="debian"), "debian")]
        assert ours.kernel == tmp_path / recipe_key(kernel="goldmig") / "vmlinux"
        assert debian.kernel == tmp_path / recipe_key(kernel="debian") / "vmlinux"
        assert (ours.kernel.read_bytes(), debian.kernel.read_bytes()) == (b"goldmig", b"debian")
        assert (ours.kernel_kind, debian.kernel_kind) == ("goldmig", "debian")
        assert ensure_golden_image(tmp_path, kernel="goldmig") == ours and len(built) == 2

    def test_kernel_identity(self, tmp_path: Path) -> None:
        for kind in image.KERNELS:
            fake_image(tmp_path / kind, kind=kind)
        ours = GoldenImage.load(tmp_path / "goldmig").kernel_identity()
        assert ours == image.KernelIdentity(
            "goldmig", "goldmig-6.1.192-goldmig-e9fadc1e4032", "6.1.192-goldmig",
            sha256(tmp_path / "goldmig" / "vmlinux"),
            "built from linux-source-6.1 6.1.192-3, config allnoconfig + goldmig.config, "
            "powerpc64le-linux-gnu-gcc 12.2.0")
        debian = GoldenImage.load(tmp_path / "debian").kernel_identity()
        assert debian == image.KernelIdentity(
            "debian", "linux-image-6.1.0-57-powerpc64le 6.1.192-3", "6.1.0-57-powerpc64le",
            sha256(tmp_path / "debian" / "vmlinux"),
            "Debian package linux-image-6.1.0-57-powerpc64le_6.1.192-3_ppc64el.deb")

    def test_unknown_kernel_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(GuestImageError, match="no golden image with kernel 'ubuntu': the "
                                                  "kernels are goldmig, debian"):
            ensure_golden_image(tmp_path, kernel="ubuntu")
        assert list(tmp_path.iterdir()) == []

    def test_an_image_of_the_other_kernel_under_a_key_is_refused(self, tmp_path: Path) -> None:
        fake_image(tmp_path / recipe_key(kernel="debian"), kind="goldmig")
        with pytest.raises(GuestImageError, match="boots a goldmig kernel, not the debian kernel"):
            ensure_golden_image(tmp_path, kernel="debian")

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


# ---------------------------------------------------------------- goldmig guest


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """ensure_golden_image on fake images in tmp_path; the kernels asked for, in order."""
    asked: list[str] = []
    real = image.ensure_golden_image

    def ensure(cache_root: Path | None = None, kernel: str = image.DEFAULT_KERNEL) -> image.GoldenImage:
        asked.append(kernel)
        monkeypatch.setattr(image, "_build", lambda into, kind: fake_image(into, b"vmlinux", kind=kind))
        return real(tmp_path, kernel)

    monkeypatch.setattr(image, "ensure_golden_image", ensure)
    return asked


def test_prints_the_default_images_kernel(images: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["guest"]) == 0
    assert images == ["goldmig"]
    directory = tmp_path / image.recipe_key(kernel="goldmig")
    sha = image.GoldenImage.load(directory).kernel_identity().sha256
    assert capsys.readouterr().out.splitlines() == [
        "golden-test-000000000000",
        "  kernel  goldmig: goldmig-6.1.192-goldmig-e9fadc1e4032, version 6.1.192-goldmig",
        "          built from linux-source-6.1 6.1.192-3, config allnoconfig + goldmig.config, "
        "powerpc64le-linux-gnu-gcc 12.2.0",
        f"  sha256  {sha}",
        f"  vmlinux {directory / 'vmlinux'}",
        f"  initrd  {directory / 'initrd.gz'}",
    ]


def test_kernel_debian_prints_debians(images: list[str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["guest", "--kernel", "debian"]) == 0
    assert images == ["debian"]
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("  kernel  debian: linux-image-6.1.0-57-powerpc64le 6.1.192-3, "
                      "version 6.1.0-57-powerpc64le")
    assert out[2] == "          Debian package linux-image-6.1.0-57-powerpc64le_6.1.192-3_ppc64el.deb"
    assert out[4] == f"  vmlinux {tmp_path / image.recipe_key(kernel='debian') / 'vmlinux'}"


def test_unknown_kernel_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["guest", "--kernel", "ubuntu"])
    assert exit_.value.code == 2
    assert "invalid choice: 'ubuntu' (choose from 'goldmig', 'debian')" in capsys.readouterr().err


def run_build(golden: Path, out: Path, kernel: str = "goldmig") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(golden / "build.py"), "--out", str(out), "--kernel", kernel],
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

    @pytest.mark.parametrize("kernel", image.KERNELS)
    def test_two_builds_are_byte_identical(self, tmp_path: Path, kernel: str) -> None:
        """With our kernel, both builds take it from build_kernel.py's cache (the user's, built
        there first if missing: minutes)."""
        direct = tmp_path / "direct"
        proc = run_build(image.GOLDEN_DIR, direct, kernel)
        assert proc.returncode == 0, proc.stderr

        cached = ensure_golden_image(tmp_path / "cache", kernel=kernel)
        assert cached.kernel.parent.name == recipe_key(kernel=kernel)
        for name in ("vmlinux", "initrd.gz", "manifest.json"):
            assert sha256(direct / name) == sha256(cached.kernel.parent / name), name
        manifest = json.loads((direct / "manifest.json").read_text())
        assert manifest == cached.manifest
        assert sorted(p.name for p in direct.iterdir()) == ["initrd.gz", "manifest.json", "vmlinux"]

        # What the manifest promises about the image.
        kver = manifest["kernel_version"]
        both = (direct / "vmlinux").read_bytes() + (direct / "initrd.gz").read_bytes()
        assert cached.image_id == f"golden-{kver}-{hashlib.sha256(both).hexdigest()[:12]}"
        assert cached.kernel_cmdline == "console=hvc0 quiet"
        identity = cached.kernel_identity()
        assert (identity.kind, identity.version) == (kernel, kver)
        assert identity.sha256 == sha256(direct / "vmlinux")
        if kernel == "debian":  # as it always was: what the nested hosts' image reads
            assert kver.startswith("6.1.0-") and kver.endswith("-powerpc64le")
            assert "kernel" not in manifest
            assert {p["role"] for p in manifest["packages"]} == {"kernel", "busybox"}
        else:
            assert kver.startswith("6.1.") and kver.endswith("-goldmig")
            assert {p["role"] for p in manifest["packages"]} == {"busybox"}
            own = manifest["kernel"]
            built = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "goldmig" \
                / "kernels" / own["build_key"]
            kernel_manifest = json.loads((built / "manifest.json").read_text())
            assert own["kernel_id"] == kernel_manifest["kernel_id"] == identity.kernel_id
            assert own["vmlinux_sha256"] == kernel_manifest["files"]["vmlinux"]["sha256"] \
                == sha256(built / "vmlinux") == identity.sha256
            assert own["source"]["package"] == "linux-source-6.1"
            assert own["config"]["fragment"] == "goldmig.config"
            assert own["build"]["toolchain"]["compiler"].startswith("powerpc64le-linux-gnu-gcc")
            assert manifest["files"]["kernel.config"]["sha256"] == own["config"]["config_sha256"]
        for name in ("vmlinux", "initrd.gz"):
            assert manifest["files"][name]["sha256"] == sha256(direct / name)
        assert manifest["files"]["agent.c"]["sha256"] == sha256(image.GOLDEN_DIR / "agent.c")

        # A second call finds the cache and does not rebuild.
        stamp = (cached.kernel.parent / "manifest.json").stat().st_mtime_ns
        assert ensure_golden_image(tmp_path / "cache", kernel=kernel) == cached
        assert (cached.kernel.parent / "manifest.json").stat().st_mtime_ns == stamp

    def test_damaged_cached_image_is_rebuilt_identical(
        self, user_cache: Path, private_cache: Path, golden_image: Path,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """A copy of the user's image with one kernel byte changed: build.py makes it again."""
        if (user_cache / "debs").is_dir():
            shutil.copytree(user_cache / "debs", private_cache / "debs")  # build.py's download cache
        key = json.loads((golden_image / "manifest.json").read_text())["kernel"]["build_key"]
        shutil.copytree(user_cache / "kernels" / key, private_cache / "kernels" / key)  # not compiled again
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

    @pytest.mark.parametrize(("kernel", "package", "prefix"), [
        ("debian", "kernel", "5.10."),
        ("goldmig", "busybox", "1:1.30."),
    ])
    def test_series_outside_the_pin_is_refused(
        self, tmp_path: Path, kernel: str, package: str, prefix: str
    ) -> None:
        golden = copy_recipe(tmp_path / "golden")
        recipe = json.loads((golden / "recipe.json").read_text())
        recipe[package]["version_prefix"] = prefix
        (golden / "recipe.json").write_text(json.dumps(recipe))
        proc = run_build(golden, tmp_path / "out", kernel)
        assert proc.returncode == 1
        assert "series mismatch" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists()
