"""root_view: the build root stays read-only and untouched, shared directories appear in place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.builds.model import Build
from harness.errors import HostError
from harness.hosts.netns import NamespacePair
from harness.hosts.sandbox import root_view


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for sub in ("usr/bin", "var/tmp", "var/lib", "etc", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "var/tmp/keep").write_text("root's own")
    os.symlink("usr/bin", root / "bin")
    return root


def test_descends_only_towards_shared_directories(fake_root: Path) -> None:
    args = root_view(fake_root, [Path("/tmp")], [Path("/var/tmp")])
    pairs = list(zip(args, args[1:], strict=False))
    assert ("--symlink", "usr/bin") in pairs and ("--ro-bind", str(fake_root / "etc")) in pairs
    assert ("--dir", "/var") in pairs and ("--ro-bind", str(fake_root / "var/lib")) in pairs
    assert str(fake_root / "var/tmp") not in args  # hidden under the shared directory
    assert args[-6:] == ["--bind", "/tmp", "/tmp", "--ro-bind", "/var/tmp", "/var/tmp"]
    assert str(fake_root / "tmp") not in args  # /tmp is always a fresh tmpfs


def test_refuses_shares_it_cannot_place(fake_root: Path, tmp_path: Path) -> None:
    (tmp_path / "bin-shared").mkdir()
    with pytest.raises(HostError, match="crosses symlink /bin"):
        root_view(fake_root, [], [Path("/bin")])  # /bin is the root's symlink
    with pytest.raises(HostError, match="existing absolute directory"):
        root_view(fake_root, [Path("relative")], [])
    with pytest.raises(HostError, match="/proc is the sandbox's own"):
        root_view(fake_root, [Path("/proc")], [])


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A readable directory outside /tmp, below a directory that the root also has."""
    path = Path(tempfile.mkdtemp(prefix="gm-share-", dir="/var/tmp"))
    (path / "vmlinux").write_text("a kernel\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_namespace_host_sees_shares_and_cannot_touch_the_root(
    trixie: Build, rundir: Path, outside_tmp: Path, tmp_path: Path
) -> None:
    before = sorted(os.listdir(trixie.root / "var/tmp"))
    with NamespacePair(trixie.root, writable=[rundir], readable=[outside_tmp],
                       evidence=tmp_path / "evidence") as pair:
        host = pair.host("a")
        assert host.run(trixie, ["cat", str(outside_tmp / "vmlinux")]).stdout == "a kernel\n"
        assert host.run(trixie, ["touch", str(outside_tmp / "x")]).returncode != 0
        assert host.run(trixie, ["touch", "/usr/bin/x"]).returncode != 0
        assert host.run(trixie, ["touch", str(rundir / "x")]).returncode == 0
        assert host.run(trixie, ["test", "-x", trixie.binary]).returncode == 0
    assert (rundir / "x").exists() and not (outside_tmp / "x").exists()
    assert sorted(os.listdir(trixie.root / "var/tmp")) == before
    assert "Server listening on" in (tmp_path / "evidence/sshd-a.log").read_text()
