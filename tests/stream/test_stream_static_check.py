"""static_check(): -dump-vmstate dumps compared like QEMU's vmstate-static-checker.py."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.errors import BuildError, HostError
from harness.stream import corpus
from harness.stream.diff import Impact
from harness.stream.peer import PeerScripts, run_static_checker
from harness.stream.recorder import RecordError, dump_vmstate
from harness.stream.static_check import StaticCheck, static_check


def f(name: str, size: int = 4, version: int = 0, exists: bool = False, **extra: Any) -> dict[str, Any]:
    return {"field": name, "version_id": version, "field_exists": exists, "size": size, **extra}


def desc(name: str, fields: list[dict[str, Any]], version: int = 1, minimum: int = 1,
         subsections: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "version_id": version, "minimum_version_id": minimum,
                         "Fields": fields}
    if subsections is not None:
        d["Subsections"] = subsections
    return d


def dump(machine: str = "pseries-9.9", **sections: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"vmschkmachine": {"Name": machine}}
    for qom, description in sections.items():
        out[qom.replace("_", "-")] = {"Name": qom, "version_id": description["version_id"],
                                      "minimum_version_id": description["minimum_version_id"],
                                      "Description": description}
    return out


def whats(result: StaticCheck) -> list[tuple[str, str, str]]:
    return [(x.impact.label, x.section, x.what) for x in result.findings]


class TestSynthetic:
    def test_identical(self) -> None:
        d = dump(dev=desc("dev", [f("a")]))
        assert static_check(d, d).findings == ()

    def test_versions(self) -> None:
        src = dump(dev=desc("dev", [f("a")], version=3))
        dst = dump(dev=desc("dev", [f("a")], version=2))
        assert ("breaks", "dev", "version too new") in whats(static_check(src, dst))
        newer = dump(dev=desc("dev", [f("a")], version=5, minimum=4))
        assert ("breaks", "dev", "version below minimum") in whats(static_check(src, newer))
        assert static_check(dst, src, reverse=True).findings == static_check(src, dst).findings

    def test_missing_section_and_subsection(self) -> None:
        sub = desc("dev/sub", [f("s")])
        src = dump(dev=desc("dev", [f("a")], subsections=[sub]), gone=desc("gone", []))
        dst = dump(dev=desc("dev", [f("a")], subsections=[]))
        assert whats(static_check(src, dst)) == [("breaks", "dev", "subsection missing"),
                                                 ("breaks", "gone", "section missing")]

    def test_fields_removed_and_resized(self) -> None:
        src = dump(dev=desc("dev", [f("a"), f("b", size=8), f("c")]))
        assert whats(static_check(src, dump(dev=desc("dev", [f("a"), f("b", size=4)])))) == [
            ("breaks", "dev", "size mismatch"), ("breaks", "dev", "field removed")]
        assert whats(static_check(src, dump(dev=desc("dev", [f("a"), f("x", size=8), f("c")])))) == [
            ("breaks", "dev", "field mismatch")]

    def test_unused_gap_stands_for_retired_fields(self) -> None:
        src = dump(dev=desc("dev", [f("a"), f("b", size=2), f("c", size=6), f("d")]))
        dst = dump(dev=desc("dev", [f("a"), f("unused", size=8), f("d")]))
        assert static_check(src, dst).findings == ()
        wrong = dump(dev=desc("dev", [f("a"), f("unused", size=7), f("d")]))
        assert whats(static_check(src, wrong)) == [("breaks", "dev", "unused size mismatch")]

    def test_fields_moved_into_a_substruct(self) -> None:
        src = dump(dev=desc("dev", [f("x"), f("y"), f("z")]))
        inner = desc("inner", [f("x"), f("y")])
        dst = dump(dev=desc("dev", [f("parent_obj", size=8, Description=inner), f("z")]))
        assert static_check(src, dst).findings == ()

    def test_conditional_fields_may_break(self) -> None:
        src = dump(dev=desc("dev", [f("a"), f("old", exists=True), f("b")]))
        dst = dump(dev=desc("dev", [f("a"), f("b")]))
        (finding,) = static_check(src, dst).findings
        assert finding.impact is Impact.MAY_BREAK and "field_exists" in finding.detail

    def test_only_the_machines_devices(self) -> None:
        src = dump(dev=desc("dev", [f("a")], version=2), other=desc("other", [f("a")], version=2))
        dst = dump(dev=desc("dev", [f("a")]), other=desc("other", [f("a")]))
        assert {x.section for x in static_check(src, dst, only={"dev"}).findings} == {"dev"}

    def test_machine_type_is_a_warning(self) -> None:
        result = static_check(dump("pseries-1.0"), dump("pseries-2.0"))
        assert whats(result) == [("changed", "vmschkmachine", "machine type")]
        assert result.errors == 0
        assert json.loads(result.to_json())["findings"][0]["impact"] == "changed"


def checker_sections(report: str) -> Counter[str]:
    return Counter(m.group(1) for m in re.finditer(r'^Section "([^"]+)"', report, re.MULTILINE))


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """-dump-vmstate of pseries-7.2 from QEMU 7.2 and 10.0."""
    try:
        old = dump_vmstate(corpus.reference_build("7.2"), "pseries-7.2")
        new = dump_vmstate(corpus.reference_build("10.0"), "pseries-7.2")
    except (BuildError, HostError) as exc:
        pytest.skip(f"QEMU builds unavailable: {exc}")
    where = tmp_path_factory.mktemp("dumps")
    (where / "old.json").write_text(json.dumps(old))
    (where / "new.json").write_text(json.dumps(new))
    return where / "old.json", where / "new.json"


@pytest.mark.slow
class TestAgainstQemusChecker:
    @pytest.mark.parametrize("reverse", [False, True], ids=["7.2-to-10.0", "10.0-to-7.2"])
    def test_same_findings_per_section(self, dumps: tuple[Path, Path], reverse: bool,
                                       peer: PeerScripts) -> None:
        old, new = dumps
        src, dst = (new, old) if reverse else (old, new)
        errors, report = run_static_checker(peer, src, dst)
        ours = static_check(json.loads(old.read_text()), json.loads(new.read_text()), reverse=reverse)
        found = Counter(x.section for x in ours.findings if x.section != "vmschkmachine")
        assert found == checker_sections(report)
        assert errors == min(255, sum(found.values()))

    def test_5_2_cannot_dump_its_vmstate(self) -> None:
        """QEMU 5.2 (bullseye) crashes in -dump-vmstate: a finding, recorded as such."""
        try:
            build = corpus.reference_build("5.2")
        except (BuildError, HostError) as exc:
            pytest.skip(f"QEMU 5.2 unavailable: {exc}")
        with pytest.raises(RecordError, match="exit 139"):
            dump_vmstate(build, "pseries-5.2")
