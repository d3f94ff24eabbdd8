"""Crashes ``goldmig bench-fuzz`` found, minimised: each input must now end in a summary or a StreamError.

Each test names the fuzz input it comes from (seed, input number, how it was
made) and reduces it to the corruption that mattered.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest
from streamgen import StreamWriter, device, field, full_stream, vmdesc

from harness.paths import REPO_ROOT
from harness.stream.errors import StreamError
from harness.stream.fdt import FdtError, summarise_fdt
from harness.stream.fuzz.gen import small_fdt
from harness.stream.summary import summarise


class TestDeviceTree:
    def test_structure_block_short_of_bytes_is_refused_without_crashing(self) -> None:
        """Seed 1, input 1050: 20 bytes deleted inside the spapr_dtb blob of a real 7.2 stream.

        libfdt's accessors trust the tree: fdt_get_property_by_offset read
        out of bounds and the process died of SIGSEGV. Minimised: 4 bytes
        gone from the structure block of a small tree (its size unchanged).
        In a child process, so that a regression fails this test instead of
        killing pytest.
        """
        tree = small_fdt()
        bad = tree[:68] + tree[72:] + bytes(4)
        code = (
            "import sys\n"
            "from harness.stream.fdt import FdtError, summarise_fdt\n"
            "try:\n    summarise_fdt(bytes.fromhex(sys.argv[1]))\n"
            "except FdtError as exc:\n    print('FdtError:', exc)\n"
        )
        run = subprocess.run([sys.executable, "-c", code, bad.hex()], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"summarise_fdt died: {run.returncode} {run.stderr[-500:]}"
        assert run.stdout.startswith("FdtError: libfdt:")

    def test_property_name_that_is_not_ascii_is_refused(self) -> None:
        """Seed 2, input 1465: bit flips in a real 7.2 spapr_dtb; property names became non-UTF-8.

        pylibfdt decodes names as UTF-8 and reported the failure as a
        SystemError that escaped summarise(). Minimised: one name byte 0xff.
        """
        tree = small_fdt()
        strings = int.from_bytes(tree[12:16], "big")
        bad = tree[:strings] + b"\xff" + tree[strings + 1 :]
        with pytest.raises(FdtError, match="not ASCII"):
            summarise_fdt(bad)

    def test_a_bad_tree_leaves_a_note_in_the_summary(self) -> None:
        tree = small_fdt()
        strings = int.from_bytes(tree[12:16], "big")
        summary = summarise(io.BytesIO(spapr_stream(tree[:strings] + b"\xff" + tree[strings + 1 :])))
        assert summary.spapr is not None and summary.spapr.fdt is None
        assert "not ASCII" in summary.spapr.fdt_note
        good = summarise(io.BytesIO(spapr_stream(tree))).spapr
        assert good is not None and good.fdt is not None


def spapr_stream(tree: bytes) -> bytes:
    """The synthetic stream plus a spapr section whose spapr_dtb carries ``tree``."""
    desc = vmdesc()
    desc["devices"].append(device("spapr", [field("x", "uint8", 1)], version=3, subsections=[
        {"vmsd_name": "spapr_dtb", "version": 1, "fields": [
            field("fdt_initial_size", "uint32", 4), field("fdt_size", "uint32", 4),
            field("fdt_blob", "buffer", len(tree))]}]))
    w = StreamWriter(header=False).raw(full_stream(with_vmdesc=False)[:-1])
    w.full(9, "spapr", 0, 3).u8(1).subsection("spapr_dtb", 1).u32(len(tree)).u32(len(tree)).raw(tree)
    return bytes(w.footer(9).eof().vmdesc(desc))


class TestVmdescNesting:
    def test_the_outcome_does_not_depend_on_the_callers_stack(self) -> None:
        """Seed 1, input 2736: a vmdesc field's size replaced by 5000 levels of nested structs.

        json.loads met Python's recursion limit at a depth that depends on
        how deep the caller already was: the parser and the summariser (a few
        frames deeper) refused the same stream with different reasons. Now
        the nesting is measured before decoding. Minimised: the synthetic
        stream with that vmdesc, refused from several stack depths.
        """
        text = json.dumps(vmdesc()).replace('"size": 4', '"size": @', 1)
        nest = '{"fields": [{"name": "n", "type": "struct", "size": 1, "struct": ' * 5000
        text = text.replace("@", nest + "{}" + "}]}" * 5000)
        data = full_stream(with_vmdesc=False) + b"\x06" + struct.pack(">I", len(text)) + text.encode()
        outcomes = {at_depth(depth, lambda: refusal(data)) for depth in (0, 1, 2, 3, 301, 602)}
        assert len(outcomes) == 1, outcomes
        ((offset, reason),) = outcomes
        assert offset == len(full_stream(with_vmdesc=False)) + 5 and "nested deeper" in reason

    def test_structs_nested_fifty_deep_still_decode(self) -> None:
        inner: dict[str, object] = {"vmsd_name": "leaf", "version": 1, "fields": [field("v", "uint8", 1)]}
        for level in range(50):
            inner = {"vmsd_name": f"level{level}", "version": 1,
                     "fields": [field("s", "struct", 1, struct=inner)]}
        desc = {"page_size": 4096, "devices": [{"name": "deep", "instance_id": 0, **inner}]}
        w = StreamWriter().configuration("pseries-9.9").full(1, "deep", 0, 1).u8(7).footer(1).eof()
        section = summarise(io.BytesIO(bytes(w.vmdesc(desc)))).section("deep")
        assert section is not None and section.decoded


def refusal(data: bytes) -> tuple[int, str]:
    with pytest.raises(StreamError) as info:
        summarise(io.BytesIO(data))
    return info.value.offset, info.value.reason


def at_depth(depth: int, call: Callable[[], tuple[int, str]]) -> tuple[int, str]:
    """``call()`` made ``depth`` frames deeper than here."""
    return call() if depth == 0 else at_depth(depth - 1, call)
