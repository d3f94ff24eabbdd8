"""matrix.yaml loading: the shipped matrix expands as documented; bad input names file, key and fix."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
from harness.matrix.load import load_matrix
from harness.paths import REPO_ROOT

SHIPPED = REPO_ROOT / "matrix.yaml"


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _shipped() -> dict[str, object]:
    data = yaml.safe_load(SHIPPED.read_text())
    assert isinstance(data, dict)
    return data


class TestShippedMatrix:
    def test_default_selection_covers_every_direction(self) -> None:
        matrix = load_matrix(SHIPPED)
        ids = [c.id for c in matrix.select(matrix.default_selection)]
        # baseline-idle on 3 machine types + ... + intc (3 ic-modes on 4.2 and the newest)
        # + caps (3 capabilities on every pair, the other 4 on each build alone)
        # + phb (2.7 split on two builds, latest-common windows) + xiveblocks (2 variants) + timebase
        # + libvirt (7.2 and 10.0 both ways: baseline-idle, pingpong)
        # + hotplug (11 variants 10.0>10.0, 3 on the 8 other pairs of the three builds,
        #   cpu-stopped-2ms on the 3 other pairs of 7.2 and 10.0)
        # + libvirt hotplug (memory-0ms, 7.2 and 10.0 both ways)
        # + pcihotplug (17 variants 10.0>10.0, phb1 plug-0ms and unplug-0ms on the 9 pairs of the three)
        # + the references 10.2 and 11.1: with each other and the three both ways, baseline-idle on
        #   2 machine types; their 4 pairs through 6 more variants
        assert len(ids) == (16 * 2 + 4 * 6
                            + 3 * 3 * 3 + 3 * 3 * 2 + 3 * 3 + 2 * 2 + 2 * 2 + 3 * 3 + 3 * 3 * 3 * 2
                            + 3 * 3 * 3 + 3 * 4 + 2 * 2 + 3 * 3 + 3 * 3 * 2 + 3 * 3 + 2 * 2 * 2
                            + 11 + 8 * 3 + 3 + 2 * 2
                            + 17 + 8 * 2) == len(set(ids))
        assert {
            "qemu-7.2>qemu-7.2/pseries-7.2/baseline-idle",
            "qemu-7.2>qemu-10.0/pseries-7.2/baseline-idle",
            "qemu-10.0>qemu-7.2/pseries-7.2/baseline-idle",
            "qemu-10.0>qemu-10.0/pseries-7.2/baseline-idle",
            "qemu-5.2>qemu-10.0/latest-common/baseline-busy",
            "qemu-7.2>qemu-5.2/latest-common/baseline-timer",
        } <= set(ids)

    def test_every_known_failure_covers_a_cell(self) -> None:
        matrix = load_matrix(SHIPPED)
        ids = [c.id for c in matrix.cells()]
        for known in matrix.known_failures:
            for pattern in known.cells:
                assert any(known.covers(i) and fnmatch.fnmatchcase(i, pattern) for i in ids), pattern

    def test_smoke_is_a_subset(self) -> None:
        matrix = load_matrix(SHIPPED)
        smoke = {c.id for c in matrix.select("smoke")}
        assert smoke and smoke <= {c.id for c in matrix.cells()}


class TestBadInput:
    def test_typo_in_top_level_key_suggests_the_right_one(self, tmp_path: Path) -> None:
        data = _shipped()
        data["grops"] = data.pop("groups")
        with pytest.raises(ConfigError) as err:
            load_matrix(_write(tmp_path, data))
        assert "grops: unknown key; did you mean 'groups'?" in str(err.value)
        assert str(tmp_path / "matrix.yaml") in str(err.value)

    def test_unknown_build_in_group(self, tmp_path: Path) -> None:
        data = _shipped()
        data["groups"][0]["builds"] = ["qemu-7.2", "qemu-10,0"]  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"groups\[0\]\.builds\[1\]: 'qemu-10,0' is not defined; "
                                              r"did you mean 'qemu-10.0'\?"):
            load_matrix(_write(tmp_path, data))

    def test_unknown_scenario(self, tmp_path: Path) -> None:
        data = _shipped()
        data["groups"][0]["scenarios"] = ["basline"]  # type: ignore[index]
        with pytest.raises(ConfigError,
                           match=r"scenarios\[0\]: 'basline' is not a scenario or scenario-variant; "
                                 r"did you mean 'baseline'"):
            load_matrix(_write(tmp_path, data))

    def test_a_scenario_name_means_all_its_variants(self, tmp_path: Path) -> None:
        data = _shipped()
        data["groups"] = [{"name": "g", "builds": ["qemu-7.2"], "machines": ["pseries-7.2"],
                           "scenarios": ["baseline", "baseline-idle", "pingpong"]}]
        ids = [c.id for c in load_matrix(_write(tmp_path, data)).cells()]
        assert ids == [f"qemu-7.2>qemu-7.2/pseries-7.2/{s}" for s in
                       ("baseline-idle", "baseline-busy", "baseline-timer", "pingpong")]

    def test_against_pairs_new_builds_with_old_ones_both_ways_but_not_old_with_old(
            self, tmp_path: Path) -> None:
        data = _shipped()
        data["groups"] = [{"name": "g", "builds": ["qemu-10.0"], "against": ["qemu-5.2", "qemu-7.2"],
                           "machines": ["pseries-7.2"], "scenarios": ["baseline-idle"]}]
        pairs = [c.id.partition("/")[0] for c in load_matrix(_write(tmp_path, data)).cells()]
        assert pairs == ["qemu-10.0>qemu-10.0", "qemu-10.0>qemu-5.2", "qemu-5.2>qemu-10.0",
                         "qemu-10.0>qemu-7.2", "qemu-7.2>qemu-10.0"]
        data["groups"][0]["against"] = ["qemu-7.3"]  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"groups\[0\]\.against\[0\]: 'qemu-7.3' is not defined"):
            load_matrix(_write(tmp_path, data))

    def test_unknown_variant_suggests_one(self, tmp_path: Path) -> None:
        data = _shipped()
        data["groups"][0]["scenarios"] = ["baseline-idel"]  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"'baseline-idel' is not a scenario or scenario-variant; "
                                              r"did you mean 'baseline-idle'"):
            load_matrix(_write(tmp_path, data))

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("memory_mb", -1, "guest.memory_mb: -1 is out of range: guest RAM in MiB, from 256 to 8192"),
        ("memory_mb", 10_000_000, "guest.memory_mb: 10000000 is out of range"),
        ("smp", 0, "guest.smp: 0 is out of range: virtual CPUs at boot, from 1 to 16"),
        ("maxcpus", 1, "guest.maxcpus: 1 is less than smp (2)"),
    ])
    def test_impossible_guest_values_name_the_key_and_the_range(
        self, tmp_path: Path, key: str, value: int, message: str
    ) -> None:
        data = _shipped()
        data["guest"][key] = value  # type: ignore[index]
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_matrix(_write(tmp_path, data))

    def test_bad_machine_name(self, tmp_path: Path) -> None:
        data = _shipped()
        data["groups"][0]["machines"] = ["pseries7.2"]  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"machines\[0\]: 'pseries7.2' is not a pseries machine type"):
            load_matrix(_write(tmp_path, data))

    def test_guest_kernel_is_ours_by_default_and_debian_on_request(self, tmp_path: Path) -> None:
        assert load_matrix(SHIPPED).guest.kernel == "goldmig"
        data = _shipped()
        data["guest"].pop("kernel", None)  # type: ignore[attr-defined]
        assert load_matrix(_write(tmp_path, data)).guest.kernel == "goldmig"
        data["guest"]["kernel"] = "debian"  # type: ignore[index]
        assert load_matrix(_write(tmp_path, data)).guest.kernel == "debian"

    @pytest.mark.parametrize("value", ["ubuntu", "Debian", ""])
    def test_unknown_guest_kernel_names_the_key_and_the_kernels(self, tmp_path: Path, value: str) -> None:
        data = _shipped()
        data["guest"]["kernel"] = value  # type: ignore[index]
        with pytest.raises(ConfigError, match=re.escape(f"guest.kernel: {value!r} is not one of goldmig, "
                                                        "debian (goldmig: our own kernel")):
            load_matrix(_write(tmp_path, data))

    def test_wrong_type(self, tmp_path: Path) -> None:
        data = _shipped()
        data["guest"]["memory_mb"] = "lots"  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"guest\.memory_mb: must be a int, got 'lots'"):
            load_matrix(_write(tmp_path, data))

    def test_unknown_build_kind(self, tmp_path: Path) -> None:
        data = _shipped()
        data["builds"]["qemu-10.0"]["kind"] = "debain"  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"builds\.qemu-10\.0\.kind: 'debain' is not a build kind"):
            load_matrix(_write(tmp_path, data))

    def test_invalid_yaml(self, tmp_path: Path) -> None:
        path = tmp_path / "matrix.yaml"
        path.write_text("builds: [\n")
        with pytest.raises(ConfigError, match="is not valid YAML"):
            load_matrix(path)

    def test_known_failure_needs_evidence(self, tmp_path: Path) -> None:
        data = _shipped()
        data["known_failures"] = [{"cells": "*", "check": "online-cpus", "match": "x", "reason": "r"}]
        with pytest.raises(ConfigError, match=r"known_failures\[0\]\.evidence: is required"):
            load_matrix(_write(tmp_path, data))

    def test_known_failure_names_the_checks_it_explains(self, tmp_path: Path) -> None:
        data = _shipped()
        data["known_failures"] = [{"cells": "*", "match": "x", "reason": "r", "evidence": "e"}]
        with pytest.raises(ConfigError, match=r"known_failures\[0\]\.check: missing: name the check"):
            load_matrix(_write(tmp_path, data))

    def test_a_check_id_is_the_name_with_dashes(self, tmp_path: Path) -> None:
        data = _shipped()
        data["known_failures"] = [{"cells": "*", "check": ["online-cpus", "timer ticks on schedule"],
                                   "match": "x", "reason": "r", "evidence": "e"}]
        with pytest.raises(ConfigError, match=r"known_failures\[0\]\.check\[1\]: 'timer ticks on "
                                              r"schedule' is not a check id: .* e\.g\. timer-ticks"):
            load_matrix(_write(tmp_path, data))

    def test_default_selection_must_exist(self, tmp_path: Path) -> None:
        data = _shipped()
        data["default_selection"] = "nighty"
        with pytest.raises(ConfigError, match="default_selection: 'nighty' is not one of selections"):
            load_matrix(_write(tmp_path, data))


class TestLabHosts:
    LAB = {"source": {"address": "10.0.0.1"}, "destination": {"address": "10.0.0.2", "port": 2222}}

    def _lab(self, **changes: object) -> dict[str, object]:
        data = _shipped()
        data.update(hosts="lab", lab=self.LAB, builds={"lab": {"kind": "host"}})
        data["groups"] = [{"name": "lab", "builds": ["lab"], "machines": ["pseries-7.2"],
                           "scenarios": ["baseline"]}]
        data["known_failures"] = []
        data["selections"] = {"all": ["*"]}
        data["default_selection"] = "all"
        data.update(changes)
        return data

    def test_lab_hosts_default_to_kvm_as_root_on_port_22(self, tmp_path: Path) -> None:
        matrix = load_matrix(_write(tmp_path, self._lab()))
        assert matrix.lab is not None
        source, destination = matrix.lab
        assert (source.address, source.port, source.user, source.accel) == ("10.0.0.1", 22, "root", "kvm")
        assert destination.port == 2222
        assert {c.accel for c in matrix.cells()} == {"kvm"}, "a KVM lab's cells are kvm: cells"

    def test_lab_needs_its_section(self, tmp_path: Path) -> None:
        data = self._lab()
        del data["lab"]
        with pytest.raises(ConfigError, match=r"lab: is required with `hosts: lab`"):
            load_matrix(_write(tmp_path, data))

    def test_a_debian_root_cannot_run_on_a_lab_host(self, tmp_path: Path) -> None:
        data = self._lab(builds={"lab": {"kind": "debian", "suite": "trixie"}})
        with pytest.raises(ConfigError, match=r"builds\.lab: is a Debian suite root on this machine.*"
                                              r"use kind host .* or kind path"):
            load_matrix(_write(tmp_path, data))

    def test_both_sides_use_one_accelerator(self, tmp_path: Path) -> None:
        lab = {"source": {"address": "10.0.0.1", "accel": "tcg"}, "destination": {"address": "10.0.0.2"}}
        with pytest.raises(ConfigError, match=r"lab\.destination\.accel: is kvm but the source's is tcg"):
            load_matrix(_write(tmp_path, self._lab(lab=lab)))

    def test_a_lab_section_without_lab_hosts_is_a_mistake(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"lab: is only used with `hosts: lab`"):
            load_matrix(_write(tmp_path, self._lab(hosts="netns")))

    def test_unknown_lab_key_suggests_the_right_one(self, tmp_path: Path) -> None:
        lab = {"source": {"address": "10.0.0.1", "knwon_hosts": "x"}, "destination": {"address": "b"}}
        with pytest.raises(ConfigError, match=r"lab\.source\.knwon_hosts: unknown key; "
                                              r"did you mean 'known_hosts'"):
            load_matrix(_write(tmp_path, self._lab(lab=lab)))
