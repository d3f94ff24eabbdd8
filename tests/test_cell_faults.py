"""Real cells with deliberately broken inputs: each fails with a clear reason and leaves no QEMU.

These run the host's QEMU 7.2 (TCG) and the golden guest.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from harness.errors import BuildError, MigrationFailed, MigrationTimeout, QemuStartError
from harness.matrix.load import load_matrix
from harness.matrix.model import Matrix
from harness.runner.cell import CellImpossible, CellRecord, run_cell

pytestmark = pytest.mark.slow
HOST_QEMU = "/usr/bin/qemu-system-ppc64"


def _matrix(tmp_path: Path, builds: dict[str, object], machine: str = "pseries-7.2",
            **extra: object) -> Matrix:
    names = list(builds)
    data = {
        "builds": builds,
        "groups": [{"name": "g", "builds": names, "machines": [machine], "scenarios": ["baseline-idle"]}],
        "selections": {"all": ["*"]},
        "default_selection": "all",
        **extra,
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_matrix(path)


def _run_first(matrix: Matrix, tmp_path: Path, src: str, dst: str) -> CellRecord:
    cell = next(c for c in matrix.cells() if c.src == src and c.dst == dst)
    record = CellRecord(cell, tmp_path / "evidence")
    run_cell(cell, matrix, record)
    return record


def test_missing_build_path_names_the_path_and_the_key(tmp_path: Path, cell_tmp: Path) -> None:
    matrix = _matrix(tmp_path, {"mine": {"kind": "path", "binary": "/nonexistent/qemu-system-ppc64",
                                         "firmware": "/nonexistent/pc-bios"}})
    with pytest.raises(BuildError, match=r"build 'mine': binary /nonexistent/qemu-system-ppc64 does not "
                                         r"exist or is not an executable file; fix `binary:` in matrix.yaml"):
        _run_first(matrix, tmp_path, "mine", "mine")


def test_machine_type_the_build_lacks_is_impossible_with_reason(tmp_path: Path, cell_tmp: Path) -> None:
    matrix = _matrix(tmp_path, {"qemu-7.2": {"kind": "host"}}, machine="pseries-10.0")
    with pytest.raises(CellImpossible, match=r"qemu-7.2 \(QEMU 7\.2\.\d+\) has no machine type "
                                             r"pseries-10.0 \(its versioned pseries types are "
                                             r"pseries-2.1 to pseries-7.2\)"):
        _run_first(matrix, tmp_path, "qemu-7.2", "qemu-7.2")


def test_qemu_exiting_at_start_up_reports_code_command_and_output(
    tmp_path: Path, cell_tmp: Path
) -> None:
    # A developer's "build" that introspects like the host's QEMU but dies when
    # asked to boot a guest, as a broken build tree would.
    wrapper = tmp_path / "qemu-system-ppc64"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in *-kernel*) echo "qemu-system-ppc64: simulated start-up failure" >&2; exit 3;; esac
        exec {HOST_QEMU} "$@"
    """))
    wrapper.chmod(0o755)
    matrix = _matrix(tmp_path, {"broken": {"kind": "path", "binary": str(wrapper),
                                           "firmware": "/usr/share/qemu"}})
    with pytest.raises(QemuStartError) as err:
        _run_first(matrix, tmp_path, "broken", "broken")
    message = str(err.value)
    assert message.splitlines()[0] == ("src QEMU (broken) exited with code 3 at start: "
                                       "qemu-system-ppc64: simulated start-up failure")
    assert err.value.exitcode == 3
    assert f"command: {wrapper} -L /usr/share/qemu -accel tcg -M pseries-7.2," in message


def test_migration_timeout_fails_the_cell_and_reaps_qemu(tmp_path: Path, cell_tmp: Path) -> None:
    # 0 s is shorter than any migration: the cell must time out, cancel, and clean up.
    matrix = _matrix(tmp_path, {"qemu-7.2": {"kind": "host"}},
                     timeouts={"boot_s": 60, "migrate_s": 0, "beat_s": 15})
    with pytest.raises(MigrationTimeout, match="migration not finished after its time limit"):
        _run_first(matrix, tmp_path, "qemu-7.2", "qemu-7.2")
    evidence = tmp_path / "evidence"
    assert (evidence / "src-serial.log").read_text().count("##GM hello") == 1
    assert "migrate_cancel" in (evidence / "src-qmp.log").read_text()


def test_suite_that_cannot_be_provisioned_names_suite_and_mirror(tmp_path: Path, cell_tmp: Path) -> None:
    matrix = _matrix(tmp_path, {"qemu-x": {"kind": "debian", "suite": "no-such-suite"}})
    with pytest.raises(BuildError, match=r"Debian suite build 'no-such-suite' could not be provisioned "
                                         r"from http://deb.debian.org/debian: debootstrap exited \d+"):
        _run_first(matrix, tmp_path, "qemu-x", "qemu-x")


def test_destination_refusing_the_stream_says_why_on_the_first_line(
    tmp_path: Path, cell_tmp: Path
) -> None:
    matrix = _matrix(tmp_path, {"qemu-10.0": {"kind": "debian", "suite": "trixie"},
                                "qemu-7.2": {"kind": "host"}})
    with pytest.raises(MigrationFailed) as err:
        _run_first(matrix, tmp_path, "qemu-10.0", "qemu-7.2")
    first = str(err.value).splitlines()[0]
    assert first.startswith("destination QEMU exited with code 1 "), first
    assert "cpu/slb: incoming version_id 2 is too new for local version_id 1" in first
