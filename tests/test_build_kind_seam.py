"""A new build kind is one module plus its registration: matrix.yaml takes it, with its own
keys and their errors, and the sites provision it without knowing its name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.builds.kinds import BUILD_KINDS
from harness.errors import ConfigError
from harness.matrix.load import load_matrix
from harness.paths import REPO_ROOT
from harness.sites.local import LocalSite


def _matrix(tmp_path: Path, toy: dict[str, str]) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    raw["builds"]["qemu-7.2"] = {"kind": "toy", **toy}
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def toy_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    # registered for this test only; tests/ is on sys.path: tests/toy_build.py
    monkeypatch.setitem(BUILD_KINDS, "toy", "toy_build:ToyBuild")


@pytest.mark.usefixtures("toy_kind")
def test_a_registered_build_kind_is_loaded_and_provisioned(tmp_path: Path) -> None:
    spec = load_matrix(_matrix(tmp_path, {"note": "the host's QEMU"})).builds["qemu-7.2"]
    assert (spec.kind, spec.name) == ("toy", "qemu-7.2")
    build = LocalSite().locate(spec, "a")
    assert (build.name, build.binary) == ("qemu-7.2", "/usr/bin/qemu-system-ppc64")


@pytest.mark.usefixtures("toy_kind")
def test_a_build_kinds_own_keys_are_checked_by_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"builds\.qemu-7\.2\.suite: unknown key"):
        load_matrix(_matrix(tmp_path, {"note": "x", "suite": "trixie"}))


def test_an_unregistered_build_kind_is_refused_naming_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'toy' is not a build kind; use host, debian, path"):
        load_matrix(_matrix(tmp_path, {"note": "x"}))
