"""The driver axis without daemons: matrix groups, cell ids, report parsing, domain XML."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
from harness.libvirt.domain_xml import DomainFiles, UnsupportedSetup, domain_xml
from harness.matrix.load import load_matrix
from harness.paths import REPO_ROOT
from harness.qemu.machine import MachineSetup
from harness.report.results import CellId

SETUP = MachineSetup(
    machine="pseries-7.2", properties=(("cap-cfpc", "broken"), ("cap-htm", "off"), ("x-vof", "on")),
    firmware="vof", accel="tcg", cpu="POWER9", memory_mb=512, smp=2, maxcpus=4,
    devices=("virtio-rng-pci",), kernel=Path("/k/vmlinux"), initrd=Path("/k/initrd.gz"),
    append="console=hvc0 quiet")
FILES = DomainFiles(Path("/run/x/src.con"), Path("/run/x/src-serial.log"))


def _matrix(tmp_path: Path, drivers: object) -> Path:
    data = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    data["groups"] = [{"name": "g", "builds": ["qemu-7.2"], "machines": ["pseries-7.2"],
                       "scenarios": ["pingpong"], "drivers": drivers}]
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_group_runs_its_cells_under_each_driver(tmp_path: Path) -> None:
    ids = [c.id for c in load_matrix(_matrix(tmp_path, ["qemu", "libvirt"])).cells()]
    assert ids == ["qemu-7.2>qemu-7.2/pseries-7.2/pingpong",
                   "libvirt:qemu-7.2>qemu-7.2/pseries-7.2/pingpong"]


def test_an_unknown_driver_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"groups\[0\]\.drivers\[0\]: 'libvrt' is not defined; "
                                          r"did you mean 'libvirt'\?"):
        load_matrix(_matrix(tmp_path, ["libvrt"]))


def test_the_report_grids_each_driver_apart() -> None:
    assert CellId.parse("libvirt:qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle") == CellId(
        "qemu-7.2", "qemu-10.0", "pseries-7.2", "baseline-idle (libvirt)")
    assert CellId.parse("qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle").scenario == "baseline-idle"


def test_domain_xml_says_the_machine_set_up_in_libvirts_words() -> None:
    dom = ElementTree.fromstring(domain_xml("gm-x", "5e5e5e5e-0000-4000-8000-000000000001", SETUP, FILES))
    assert dom.get("type") == "qemu"
    assert dom.find("os/type").get("machine") == "pseries-7.2"  # type: ignore[union-attr]
    assert dom.find("vcpu").text == "4" and dom.find("vcpu").get("current") == "2"  # type: ignore[union-attr]
    assert dom.find("features/cfpc").get("value") == "broken"  # type: ignore[union-attr]
    assert dom.find("features/htm").get("state") == "off"  # type: ignore[union-attr]
    serial = dom.find("devices/serial")
    assert serial is not None and serial.find("source").get("path") == "/run/x/src.con"  # type: ignore[union-attr]
    assert serial.find("target").get("type") == "spapr-vio-serial"  # type: ignore[union-attr]
    assert dom.find("devices/rng") is not None
    args = [a.get("value") for a in dom.iter("{http://libvirt.org/schemas/domain/qemu/1.0}arg")]
    assert args == ["-machine", "x-vof=on"]


def test_a_device_libvirt_cannot_say_is_refused_by_name() -> None:
    from dataclasses import replace

    with pytest.raises(UnsupportedSetup, match="no domain XML for -device e1000"):
        domain_xml("gm-x", "5e5e5e5e-0000-4000-8000-000000000001",
                   replace(SETUP, devices=("e1000",)), FILES)
