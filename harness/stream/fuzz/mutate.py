"""Damage a stream the ways a bad recording, a bad QEMU or a hostile file would.

The first mutation knows the seed's structure (:class:`~.writer.Seed`): it
truncates at a kind of boundary, sets a length field to a hostile value,
rewrites a RAM header word, duplicates, drops, swaps or splices whole
sections (from this seed or another), or corrupts the vmdesc JSON (its
shape, with the length kept consistent so the parser still finds it, or
its text). Further mutations, if any, are blind: bit flips, bytes set to
record-type values, random insertions and deletions, a random cut.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from harness.stream.fuzz.writer import RAM, RECORD, Seed

_MAGIC_BYTES = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x7E, 0x7F, 0x80, 0xFF)
_DEEP = "@deep@"  # placeholder for a nesting too deep to build as Python objects
_JSON_VALUES: tuple[object, ...] = (None, True, False, -1, 0, 1, 3, 2**31, 2**32 + 1, 2**64, -(2**63),
                                    1.5, "", "x", "uint32", "struct", [], {}, [[]], {"fields": []})


def mutate(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """A damaged copy of ``seed`` and what was done to it (``others``: splice donors)."""
    name, op = rng.choice(_STRUCTURED)
    data, note = op(rng, seed, others)
    steps = [f"{name}({note})"]
    for _ in range(rng.choice((0, 0, 0, 1, 2))):
        blind, fn = rng.choice(_BLIND)
        data, note = fn(rng, data)
        steps.append(f"{blind}({note})")
    return data, " + ".join(steps)


# -- blind ---------------------------------------------------------------------


def flip_bits(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return data, "empty"
    out = bytearray(data)
    at = []
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
        at.append(i)
    return bytes(out), f"at {at}"


def set_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return data, "empty"
    out = bytearray(data)
    i = rng.randrange(len(out))
    out[i] = rng.choice(_MAGIC_BYTES)
    return bytes(out), f"{i}=0x{out[i]:02x}"


def insert_random(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randint(0, len(data))
    junk = rng.randbytes(rng.randint(1, 32))
    return data[:i] + junk + data[i:], f"{len(junk)} at {i}"


def delete_random(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randint(0, len(data))
    n = rng.randint(1, 32)
    return data[:i] + data[i + n :], f"{n} at {i}"


def cut_random(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randint(0, len(data))
    return data[:i], f"at {i}"


_BLIND: tuple[tuple[str, Callable[[random.Random, bytes], tuple[bytes, str]]], ...] = (
    ("flip", flip_bits), ("set", set_bytes), ("insert", insert_random), ("delete", delete_random),
    ("cut", cut_random),
)


# -- structured ----------------------------------------------------------------


def _boundary(rng: random.Random, seed: Seed) -> tuple[str, int]:
    if not seed.boundaries:
        return "anywhere", rng.randint(0, len(seed.data))
    kind = rng.choice(sorted(seed.boundaries))
    return kind, rng.choice(seed.boundaries[kind])


def truncate(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """Cut at a record, body, RAM record, field or subsection boundary, or just around it."""
    kind, at = _boundary(rng, seed)
    at = max(0, at + rng.choice((0, 0, 0, 1, -1, 2, 5, 8)))
    return seed.data[:at], f"{kind} boundary, at {at}"


def insert_at_boundary(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """Bytes inserted or removed where a parser expects a new record or field."""
    kind, at = _boundary(rng, seed)
    if rng.random() < 0.5:
        n = rng.choice((1, 1, 2, 4, 8, 9))
        return seed.data[:at] + seed.data[at + n :], f"deleted {n} at {kind} {at}"
    junk = bytes(rng.choice(_MAGIC_BYTES) for _ in range(rng.choice((1, 1, 2, 5, 9))))
    return seed.data[:at] + junk + seed.data[at:], f"inserted {junk.hex()} at {kind} {at}"


def hostile_length(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """A length field set to zero, one, its maximum, its sign bit, or off by one."""
    if not seed.lengths:
        return flip_bits(rng, seed.data)
    at, width = rng.choice(seed.lengths)
    top = (1 << (8 * width)) - 1
    old = int.from_bytes(seed.data[at : at + width], "big")
    value = rng.choice((0, 1, top, top - 1, 1 << (8 * width - 1), (1 << (8 * width - 1)) - 1,
                        old + 1, old - 1, old * 2, rng.randint(0, top)))
    value = max(0, min(top, value))
    out = seed.data[:at] + value.to_bytes(width, "big") + seed.data[at + width :]
    return out, f"be{8 * width} at {at}: {old} -> {value}"


def ram_word(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """A RAM header word given other flags, a huge offset, or a huge MEM_SIZE total."""
    offsets = seed.boundaries.get(RAM)
    if not offsets:
        return flip_bits(rng, seed.data)
    at = rng.choice(offsets)
    old = int.from_bytes(seed.data[at : at + 8].ljust(8, b"\0"), "big")
    choice = rng.random()
    if choice < 0.4:
        flags = rng.choice((0x0, 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x22, 0x28, 0x40, 0x60, 0x80, 0x100,
                            0x120, 0x200, 0x400, 0x800, 0x2A, 0x14, 0xFFF))
        new = (old & ~0xFFF) | flags
    elif choice < 0.8:
        new = (rng.choice((1 << 63, 1 << 40, (1 << 64) - 4096, 4096, 1 << 30)) & ~0xFFF) | (old & 0xFFF)
    else:
        new = rng.choice(((1 << 64) - 4096, 1 << 62, 0)) | 0x04
    out = seed.data[:at] + new.to_bytes(8, "big") + seed.data[at + 8 :]
    return out, f"at {at}: 0x{old:x} -> 0x{new:x}"


def _span(rng: random.Random, seed: Seed) -> tuple[int, int] | None:
    return rng.choice(seed.sections) if seed.sections else None


def duplicate_section(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    span = _span(rng, seed)
    if span is None:
        return truncate(rng, seed, others)
    a, b = span
    where = rng.choice(seed.boundaries.get(RECORD, (b,)))
    return seed.data[:where] + seed.data[a:b] + seed.data[where:], f"[{a}:{b}] copied to {where}"


def drop_section(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    span = _span(rng, seed)
    if span is None:
        return truncate(rng, seed, others)
    a, b = span
    return seed.data[:a] + seed.data[b:], f"[{a}:{b}] dropped"


def swap_sections(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    if len(seed.sections) < 2:
        return drop_section(rng, seed, others)
    (a, b), (c, d) = sorted(rng.sample(seed.sections, 2))
    if c < b:  # overlapping spans (should not happen): drop the second instead
        return seed.data[:c] + seed.data[d:], f"[{c}:{d}] dropped"
    d0 = seed.data
    return d0[:a] + d0[c:d] + d0[b:c] + d0[a:b] + d0[d:], f"[{a}:{b}] <-> [{c}:{d}]"


def splice(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """A section of another stream inserted here, or this stream's head on another's tail."""
    donor = rng.choice(others) if others else seed
    records = seed.boundaries.get(RECORD, (len(seed.data),))
    where = rng.choice(records)
    if donor.sections and rng.random() < 0.6:
        a, b = rng.choice(donor.sections)
        return (seed.data[:where] + donor.data[a:b] + seed.data[where:],
                f"[{a}:{b}] of {donor.origin} inserted at {where}")
    tail = rng.choice(donor.boundaries.get(RECORD, (0,)))
    return seed.data[:where] + donor.data[tail:], f"head [:{where}] + {donor.origin} [{tail}:]"


def vmdesc_shape(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """The vmdesc JSON with one node changed, re-encoded with a consistent length field."""
    if seed.vmdesc is None:
        return hostile_length(rng, seed, others)
    desc = json.loads(seed.data[seed.vmdesc[0] : seed.vmdesc[1]])  # a fresh copy to change
    slots = list(_slots(desc))
    container, key = rng.choice(slots)
    choice = rng.random()
    deep = b""
    if choice < 0.15 and isinstance(container, dict):
        del container[key]
        note = f"deleted {key!r}"
    elif choice < 0.25 and isinstance(container, list):
        container.insert(int(key), copy.deepcopy(container[int(key)]))
        note = f"duplicated item {key}"
    elif choice < 0.3:
        depth = rng.choice((50, 5000))
        container[key] = _DEEP
        deep = b'{"fields":[{"name":"n","type":"struct","size":1,"struct":' * depth + b"{}" + b"}]}" * depth
        note = f"{depth} levels of structs at {key!r}"
    else:
        value = rng.choice(_JSON_VALUES)
        container[key] = copy.deepcopy(value)
        note = f"{key!r} = {value!r}"
    text = json.dumps(desc, separators=(",", ":")).encode()
    if deep:  # spliced in as text: json.dumps would recurse that deep
        text = text.replace(b'"' + _DEEP.encode() + b'"', deep)
    return _with_trailer(seed, text), note


def vmdesc_text(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """The vmdesc JSON text corrupted (length kept consistent, or not)."""
    if seed.vmdesc is None:
        return flip_bits(rng, seed.data)
    start, end = seed.vmdesc
    text = seed.data[start:end]
    text, note = rng.choice(_BLIND)[1](rng, text)
    if rng.random() < 0.8:
        return _with_trailer(seed, text), f"text {note}, length fixed"
    return seed.data[:start] + text, f"text {note}, length stale"


def region_flip(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    """Bits flipped inside a payload (a device tree blob, the vmdesc)."""
    if not seed.regions:
        return flip_bits(rng, seed.data)
    start, end = rng.choice(seed.regions)
    if end <= start:
        return flip_bits(rng, seed.data)
    out = bytearray(seed.data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
    return bytes(out), f"in [{start}:{end}]"


def _with_trailer(seed: Seed, text: bytes) -> bytes:
    """``seed`` with the JSON of its vmdesc trailer replaced by ``text``."""
    assert seed.vmdesc is not None
    start = seed.vmdesc[0]
    return seed.data[: start - 4] + len(text).to_bytes(4, "big") + text


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON tree."""
    out: list[tuple[Any, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, value in pairs:
            out.append((item, key))
            if isinstance(value, dict | list):
                stack.append(value)
    return out


def _blind_first(rng: random.Random, seed: Seed, others: Sequence[Seed]) -> tuple[bytes, str]:
    name, fn = rng.choice(_BLIND)
    data, note = fn(rng, seed.data)
    return data, f"{name} {note}"


_Structured = Callable[[random.Random, Seed, Sequence[Seed]], tuple[bytes, str]]
_STRUCTURED: tuple[tuple[str, _Structured], ...] = (
    ("blind", _blind_first), ("blind", _blind_first), ("truncate", truncate),
    ("boundary", insert_at_boundary), ("length", hostile_length), ("ram-word", ram_word),
    ("duplicate", duplicate_section), ("drop", drop_section), ("swap", swap_sections),
    ("splice", splice), ("vmdesc-shape", vmdesc_shape), ("vmdesc-text", vmdesc_text),
    ("region", region_flip),
)
