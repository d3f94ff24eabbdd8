"""Path builds (a developer's build tree, anywhere on this machine) on every kind of host,
and what a QEMU that dies at start says.

A namespace host sees this machine through a view with a /tmp of its own, so a
build tree in /tmp is invisible to it unless its directories are bound in.
The trees here live in /tmp, under a name with spaces, laid out like QEMU's:
``src/build/qemu-system-ppc64`` and ``src/build/pc-bios`` whose blobs are
symlinks into ``src/pc-bios``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from harness.builds.model import Build
from harness.builds.path_build import PathBuild
from harness.checks.result import Verdict
from harness.commands.patch import patch_matrix
from harness.commands.standin import WORKDIR, standin_matrix
from harness.errors import BuildError, HarnessError, HostError, ProductFailure, QemuStartError
from harness.hosts.base import Host
from harness.hosts.local import LocalHost
from harness.hosts.netns import NamespacePair
from harness.hosts.ssh import SshHost
from harness.hosts.workspace import workspace_for
from harness.matrix.load import load_matrix
from harness.matrix.model import KnownFailure
from harness.paths import REPO_ROOT
from harness.qemu.argv import SidePaths
from harness.qemu.process import QemuProcess
from harness.runner.cell import CellRecord, run_judged

HOST_QEMU = Path("/usr/bin/qemu-system-ppc64")
HOST_FIRMWARE = Path("/usr/share/qemu")


@pytest.fixture
def tree() -> Iterator[Path]:
    """A QEMU build tree in /tmp (a path with spaces): the host's QEMU and its blobs."""
    top = Path(tempfile.mkdtemp(prefix="gm path build ", dir="/tmp"))
    build, blobs = top / "src" / "build", top / "src" / "pc-bios"
    (build / "pc-bios").mkdir(parents=True)
    blobs.mkdir()
    shutil.copy2(HOST_QEMU, build / "qemu-system-ppc64")
    for blob in ("slof.bin", "vof.bin"):
        shutil.copy2(HOST_FIRMWARE / blob, blobs / blob)
        (build / "pc-bios" / blob).symlink_to(Path("../../pc-bios") / blob)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def _spec(tree: Path, binary: str = "src/build/qemu-system-ppc64") -> PathBuild:
    return PathBuild("mine", tree / binary, tree / "src/build/pc-bios")


def _qemus_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and "qemu-system" in cmdline:
            found.append(cmdline)
    return found


class TestWhatAPathBuildNeeds:
    def test_its_tree_and_where_its_firmware_links_point(self, tree: Path) -> None:
        build = _spec(tree).provision()

        assert build.binary == str(tree / "src/build/qemu-system-ppc64")
        assert build.own_dirs == (tree / "src/build", tree / "src/pc-bios")

    def test_real_paths_and_libraries_outside_usr(
        self, tree: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tree / "lib").mkdir()
        shutil.copy2("/usr/lib/x86_64-linux-gnu/libfdt.so.1", tree / "lib")
        monkeypatch.setenv("LD_LIBRARY_PATH", str(tree / "lib"))  # as an rpath would
        (tree / "link").symlink_to(tree / "src/build/qemu-system-ppc64")

        build = _spec(tree, "link").provision()

        assert build.binary == str(tree / "src/build/qemu-system-ppc64")
        assert build.own_dirs == (tree / "lib", tree / "src/build", tree / "src/pc-bios")

    def test_nothing_under_usr_which_every_view_shows(self, tree: Path) -> None:
        build = PathBuild("mine", tree / "src/build/qemu-system-ppc64", HOST_FIRMWARE).provision()

        assert build.own_dirs == (tree / "src/build",)

    @pytest.mark.parametrize("binary", ["src/build/missing", "src/build/plain-file", "src/build"])
    def test_a_binary_that_cannot_run_is_refused_naming_it(self, tree: Path, binary: str) -> None:
        (tree / "src/build/plain-file").write_text("not a program\n")
        spec = _spec(tree, binary)

        with pytest.raises(BuildError, match=rf"build 'mine': binary {spec.binary} does not exist "
                                             r"or is not an executable file; fix `binary:`"):
            spec.provision()


class TestNamespaceHosts:
    def test_see_a_build_tree_in_tmp_on_its_side_only(
        self, tree: Path, rundir: Path, trixie: Build
    ) -> None:
        build = _spec(tree).provision()
        with NamespacePair(Path("/"), trixie.root, writable=[rundir],
                           side_readable=(build.own_dirs, ())) as pair:
            a, b = pair.host("a"), pair.host("b")
            version = a.run(build, [build.binary, "-version"])
            assert version.returncode == 0 and "QEMU emulator version" in version.stdout
            blob = tree / "src/build/pc-bios/vof.bin"
            assert a.run(build, ["cmp", str(blob), str(HOST_FIRMWARE / "vof.bin")]).returncode == 0
            assert a.run(build, ["touch", str(tree / "src/build/x")]).returncode != 0, "read-only"
            assert b.run(trixie, ["test", "-e", str(tree)]).returncode != 0

    def test_refuse_a_build_their_view_lacks_before_starting_it(
        self, tree: Path, rundir: Path
    ) -> None:
        build = _spec(tree).provision()
        with NamespacePair(Path("/"), writable=[rundir]) as pair:
            host = pair.host("a")
            with pytest.raises(HostError, match=rf"{pair.a.netns} cannot see {tree / 'src/build'} "
                                                r"of this machine, which build mine runs from"):
                host.spawn(build, [build.binary], writable=[rundir], readable=[],
                           output=rundir / "out.log")


def _run_cell(tmp_path: Path, tree: Path, binary: str, hosts: str,
              machine_state_entries: Callable[..., tuple[KnownFailure, ...]]) -> CellRecord:
    """Cell mine>qemu-10.0/pseries-7.2/baseline: the tree's build as the source, trixie's QEMU
    (a root of its own) as the destination, with one guest CPU: a 2-CPU guest loses timer
    interrupts on every Debian pair (known failures of matrix.yaml). 7.2 to 10.0 on one passes
    every check but the machine state's: 10.0 flips MSR[ME], 7.2 (the tree is the host's) sends a
    stale DECR; matrix.yaml's entries for those two, declared for this cell, explain them.
    Raises ChecksFailed only when the cell failed."""
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump({
        "hosts": hosts,
        "builds": {"mine": {"kind": "path", "binary": str(tree / binary),
                            "firmware": str(tree / "src/build/pc-bios")},
                   "qemu-10.0": {"kind": "debian", "suite": "trixie"}},
        "guest": {"smp": 1},
        "groups": [{"name": "g", "builds": ["mine", "qemu-10.0"], "machines": ["pseries-7.2"],
                    "scenarios": ["baseline-idle"]}],
        "selections": {"all": ["mine>qemu-10.0/*"]},
        "default_selection": "all",
    }))
    matrix = replace(load_matrix(path), known_failures=machine_state_entries(
        msr=("*>qemu-10.0/*",), decr=("mine>*",)))
    (cell,) = matrix.select("all")
    record = CellRecord(cell, tmp_path / "evidence")
    run_judged(cell, matrix, record)
    return record


@pytest.mark.slow
@pytest.mark.parametrize("hosts", ["netns", "local"])
def test_a_cell_runs_a_build_tree_in_tmp(
    tree: Path, tmp_path: Path, hosts: str, capsys: pytest.CaptureFixture[str],
    machine_state_entries: Callable[..., tuple[KnownFailure, ...]],
    machine_state_known: Callable[..., set[str]],
) -> None:
    began = time.monotonic()
    record = _run_cell(tmp_path, tree, "src/build/qemu-system-ppc64", hosts, machine_state_entries)

    assert machine_state_known(record) == {"machine-state-cpu-0-msr", "machine-state-cpu-0-decr"}
    rest = [c for c in record.checks if not c.id.startswith("machine-state-")]
    assert [c.invariant for c in rest if not c.ok] == ["IPIs delivered between every pair of CPUs"]
    assert record.checks and all(c.ok or c.verdict is Verdict.NOT_APPLICABLE for c in rest), rest
    argv = (tmp_path / "evidence/src-argv.txt").read_text().splitlines()
    assert argv[:3] == [str(tree / "src/build/qemu-system-ppc64"), "-L", str(tree / "src/build/pc-bios")]
    with capsys.disabled():
        print(f"\n  {hosts}: path build cell {time.monotonic() - began:.1f}s")


@pytest.mark.slow
def test_a_build_dying_at_start_breaks_the_cell_in_its_own_words(
    tree: Path, tmp_path: Path, machine_state_entries: Callable[..., tuple[KnownFailure, ...]]
) -> None:
    # Introspects like the host's QEMU, dies when asked to boot a guest: a broken build tree.
    wrapper = tree / "src/build/qemu wrapper"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in *-kernel*)
            echo "qemu-system-ppc64: warning: about to fail"
            echo "qemu-system-ppc64: simulated start-up failure" >&2; exit 3;;
        esac
        exec {HOST_QEMU} "$@"
    """))
    wrapper.chmod(0o755)

    with pytest.raises(QemuStartError) as caught:
        _run_cell(tmp_path, tree, "src/build/qemu wrapper", "netns", machine_state_entries)

    error = caught.value
    assert isinstance(error, HarnessError) and not isinstance(error, ProductFailure), "broken"
    assert str(error).splitlines()[0] == (
        "src QEMU (mine) exited with code 3 at start: qemu-system-ppc64: warning: about to fail"
        " | qemu-system-ppc64: simulated start-up failure")
    assert f"command: '{wrapper}' -L '{tree / 'src/build/pc-bios'}'" in str(error)
    assert _qemus_mentioning(str(tree)) == []


@pytest.fixture(scope="module")
def standin(trixie_root: Path) -> Iterator[NamespacePair]:
    """A stand-in lab host: a namespace host sharing nothing with this machine."""
    with NamespacePair(trixie_root) as pair:
        yield pair


def test_a_lab_host_refuses_a_path_build_it_does_not_have(
    tree: Path, standin: NamespacePair
) -> None:
    spec = _spec(tree)
    with pytest.raises(BuildError, match=rf"{spec.binary} is not an executable on lab host "
                                         rf"{standin.a.netns}; a lab host runs a path build from its "
                                         r"own filesystem, which cannot see this machine's"):
        spec.on_lab_host(standin.host("a"))


@pytest.fixture(params=["local", "namespace", "lab"])
def somewhere(
    request: pytest.FixtureRequest, trixie: Build, rundir: Path, standin: NamespacePair
) -> Iterator[tuple[Host, Build]]:
    """A host of each kind with a QEMU on it; the lab one keeps QEMU's log on its own disk."""
    if request.param == "local":
        yield LocalHost(), Build("host", Path("/"), str(HOST_QEMU))
    elif request.param == "namespace":
        with NamespacePair(trixie.root, writable=[rundir]) as pair:
            yield pair.host("a"), trixie
    else:
        with SshHost(replace(standin.target("a"), shared_writable=None, workdir=WORKDIR)) as lab:
            yield lab, trixie


def test_qemu_refusing_its_options_says_why_on_every_host(
    somewhere: tuple[Host, Build], rundir: Path
) -> None:
    """An invalid -M: QEMU's own words head the error, read wherever the host keeps its log."""
    host, build = somewhere
    paths = SidePaths.for_role(rundir, "src")
    with workspace_for(host, rundir, readable=[]) as ws:
        theirs = SidePaths.for_role(ws.path(rundir), "src")
        argv = [build.binary, "-M", "no-such-machine", "-nodefaults", "-display", "none",
                "-qmp", f"unix:{theirs.qmp},server=on,wait=off",
                "-chardev", f"socket,id=console0,path={theirs.console},server=on,wait=off"]
        with QemuProcess("src", host, build, argv, paths, ws) as qemu, \
                pytest.raises(QemuStartError) as caught:
            qemu.start(timeout=20)

    first = str(caught.value).splitlines()[0]
    assert first.startswith(f"src QEMU ({build.name}) exited with code 1 at start: qemu-system-ppc64: ")
    assert "no-such-machine" in first or "unsupported machine type" in first, first
    assert caught.value.exitcode == 1


class TestPatchCandidate:
    """``goldmig patch`` refuses a candidate that cannot run before any QEMU starts."""

    def test_missing_here_is_refused_naming_the_flag(self, tree: Path, tmp_path: Path) -> None:
        matrix = load_matrix(REPO_ROOT / "matrix.yaml")
        missing = tree / "src/build/qemu-system-ppc64-not-built"
        with pytest.raises(BuildError, match=rf"binary {missing} does not exist or is not an "
                                             r"executable file; fix `binary:` in matrix.yaml "
                                             r"\(goldmig patch: --candidate\)"):
            patch_matrix(matrix, _path_entry(missing, tree / "src/build/pc-bios"), None, ["pseries-7.2"],
                         ["baseline"])
        assert _qemus_mentioning(str(tree)) == []

    def test_on_a_lab_it_must_be_installed_on_the_lab_hosts(
        self, tree: Path, tmp_path: Path, standin: NamespacePair
    ) -> None:
        path = tmp_path / "lab.yaml"
        path.write_text(yaml.safe_dump(standin_matrix(standin, ["baseline"], ["pseries-7.2"])))
        binary = tree / "src/build/qemu-system-ppc64"
        with pytest.raises(BuildError, match=rf"{binary} is not an executable on lab host "
                                             rf"destination:{standin.b.address}; a lab host runs "
                                             r"a path build from its own filesystem"):
            patch_matrix(load_matrix(path), _path_entry(binary, tree / "src/build/pc-bios"), None,
                         ["pseries-7.2"], ["baseline"])

    def test_on_a_lab_an_installed_one_is_asked_there(
        self, tmp_path: Path, standin: NamespacePair
    ) -> None:
        path = tmp_path / "lab.yaml"
        path.write_text(yaml.safe_dump(standin_matrix(standin, ["baseline"], ["pseries-7.2"])))
        data = patch_matrix(load_matrix(path), _path_entry(HOST_QEMU, HOST_FIRMWARE), None, None,
                            ["baseline"])

        itself, with_reference = data["groups"]
        assert itself["name"] == "candidate-itself" and with_reference["name"].startswith("candidate-and-")
        for group in (itself, with_reference):
            assert "pseries-10.0" in group["machines"], "the stand-ins' QEMU 10.0, not this machine's 7.2"


def _path_entry(binary: Path, firmware: Path) -> dict[str, str]:
    """A path candidate as ``goldmig patch --candidate BIN --firmware DIR`` declares it."""
    return {"kind": "path", "binary": str(binary), "firmware": str(firmware)}
