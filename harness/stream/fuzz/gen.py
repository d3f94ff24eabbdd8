"""Random well-formed streams: every record kind, RAM flag, HPT chunk and vmdesc field shape.

Each stream is what some QEMU could have sent: a configuration (its
subsections, or described in the vmdesc as QEMU 10 does), ``ram`` sections
(MEM_SIZE block lists, with guest addresses under x-ignore-shared; ZERO,
PAGE, CONTINUE, XBZRLE, COMPRESS_PAGE, MULTIFD_FLUSH, EOS, and long
same-block runs for the parser's fast path), ``spapr/htab`` sections
(no HPT, a shift, chunks), an iterative section nothing decodes, commands
with their payloads, device sections whose vmdesc entries mix every field
shape the decoder knows (integers of every width, bool, float64, nullptr,
capability, buffers, bitmaps, structs, vstructs, compressed and indexed
arrays, nested subsections), the ``spapr`` section (timebase, caps, CAS
vector, device tree), EOF and the vmdesc; with footers or without. A few
choices are unusual on purpose (HOOK pages, mapped-ram) to reach the
parser's refusals; the mutator does the rest.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Sequence
from typing import Any

from harness.stream.format import Command
from harness.stream.fuzz.writer import FIELD, RAM, RECORD, Seed, StreamWriter

_INTS = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "int32 equal": 4, "int32 le": 4,
         "int64 equal": 8, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "uint8 equal": 1,
         "uint16 equal": 2, "uint32 equal": 4, "timer": 8}
_LEAVES = (*_INTS, "bool", "float64", "nullptr", "capability", "buffer", "bitmap", "unused_buffer")
_MACHINES = ("pseries-10.0", "pseries-9.9", "pseries-7.2", "pseries-4.2", "pseries-2.7", "")
_CAPS = ("x-ignore-shared", "postcopy-ram", "multifd", "xbzrle", "validate-uuid")
_SPAPR_CAPS = ("htm", "vsx", "dfp", "cfpc", "sbbc", "ibs", "hpt_maxpagesize", "nested_kvm_hv",
               "large_decr", "ccf_assist", "fwnmi", "rpt_invalidate", "ail_mode_3")
_NO_HPT = 0xFFFFFFFF


def random_stream(rng: random.Random, fdts: Sequence[bytes]) -> Seed:
    """One random well-formed stream (``fdts``: real device trees the spapr section may carry,
    besides a small one of its own)."""
    return _Generator(rng, fdts).stream()


class _Generator:
    def __init__(self, rng: random.Random, fdts: Sequence[bytes]) -> None:
        self.rng = rng
        self.fdts = fdts
        self.w = StreamWriter()
        self.footers = rng.random() < 0.85
        self.with_vmdesc = rng.random() < 0.85
        self.configured = self.footers and rng.random() < 0.9
        self.page_size = 4096 if rng.random() < 0.9 or not (self.with_vmdesc or self.configured) \
            else rng.choice((65536, 1024))
        self.caps: list[str] = rng.sample(_CAPS, rng.randint(0, 2)) if self.configured else []
        self.next_id = rng.randrange(0, 600)
        self.devices: list[dict[str, Any]] = []
        self.config_desc: dict[str, Any] | None = None
        self.blocks: dict[str, int] = {}
        self.ram_block: str | None = None  # the block the last page named (CONTINUE's target)
        self.keys: set[tuple[str, int]] = set()
        self.hpt_slots: int | None = None
        self.hook = rng.random() < 0.05  # may send RAM_SAVE_FLAG_HOOK (refused by the parser)

    def stream(self) -> Seed:
        rng, w = self.rng, self.w
        if self.configured:
            self._configuration()
        iterative = [("ram", self._sid()), ("spapr/htab", self._sid())]
        if rng.random() < 0.2:
            iterative.append((rng.choice(("block", "dirty-bitmap", "vfio")), self._sid()))
        rng.shuffle(iterative)
        for idstr, sid in iterative:
            self._section("start", sid, idstr)
        for _ in range(rng.randint(0, 3)):
            self._maybe_command()
            for idstr, sid in iterative:
                if rng.random() < 0.7:
                    self._section("part", sid, idstr)
        for idstr, sid in iterative:
            self._section("end", sid, idstr)
        self._maybe_command()
        for _ in range(rng.randint(0, 4)):
            self._device()
        if rng.random() < 0.6:
            self._spapr()
        self._maybe_command()
        w.eof()
        if self.with_vmdesc:
            desc: dict[str, Any] = {"page_size": self.page_size, "devices": self.devices}
            if self.config_desc is not None:
                desc = {"configuration": self.config_desc, **desc}
            w.vmdesc(desc)
        return w.seed("generated")

    def _sid(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- records --------------------------------------------------------------

    def _configuration(self) -> None:
        rng, w = self.rng, self.w
        machine = rng.choice(_MACHINES)
        if rng.random() < 0.01:
            self.caps.append("mapped-ram")  # refused by the parser, on purpose
        if self.with_vmdesc and rng.random() < 0.3:
            self._described_configuration(machine)
            return
        w.configuration(machine)
        if rng.random() < 0.5 or self.page_size != 4096:
            w.subsection("configuration/target-page-bits", 1).u32(self.page_size.bit_length() - 1)
        if self.caps:
            w.subsection("configuration/capabilities", 1).length(4, len(self.caps))
            for cap in self.caps:
                w.name(cap)
        if rng.random() < 0.3:
            w.subsection("configuration/uuid", 1).raw(rng.randbytes(16))

    def _described_configuration(self, machine: str) -> None:
        """QEMU 10: the configuration is a vmstate the vmdesc describes."""
        w = self.w
        fields = [_field("len", "uint32", 4), _field("name", "buffer", len(machine))]
        subs = [{"vmsd_name": "configuration/target-page-bits", "version": 1,
                 "fields": [_field("target_page_bits", "uint32", 4)]}]
        w.mark(RECORD).u8(0x07).length(4, len(machine)).raw(machine.encode())
        w.subsection("configuration/target-page-bits", 1).u32(self.page_size.bit_length() - 1)
        if self.caps:
            first = len(self.caps[0]) + 1
            subs.append({"vmsd_name": "configuration/capabilities", "version": 1, "fields": [
                _field("caps_count", "uint32", 4),
                _field("capabilities", "capability", first, array_len=len(self.caps))]})
            w.subsection("configuration/capabilities", 1).length(4, len(self.caps))
            for cap in self.caps:
                w.name(cap)
        self.config_desc = {"vmsd_name": "configuration", "version": 1, "fields": fields,
                            "subsections": subs}

    def _section(self, kind: str, sid: int, idstr: str) -> None:
        w = self.w
        begin = w.pos
        if kind == "start":
            w.start(sid, idstr, 0, {"ram": 4, "spapr/htab": 1}.get(idstr, 1))
        elif kind == "part":
            w.part(sid)
        else:
            w.end(sid)
        if idstr == "ram":
            self._ram(kind)
        elif idstr == "spapr/htab":
            self._htab(kind)
        else:
            w.raw(self.rng.randbytes(self.rng.randint(0, 64)))
        self._close(sid, begin)

    def _close(self, sid: int, begin: int) -> None:
        if self.footers:
            self.w.footer(sid)
        self.w.marks.sections.append((begin, self.w.pos))

    def _maybe_command(self) -> None:
        rng, w = self.rng, self.w
        if rng.random() < 0.6:
            return
        cmd = rng.choice(list(Command)[1:])
        if cmd is Command.PING:
            w.command(cmd, struct.pack(">I", rng.getrandbits(32)))
        elif cmd is Command.PACKAGED:  # be32 length, then that many bytes (a packaged stream)
            inner = rng.randbytes(rng.randint(0, 40))
            w.mark(RECORD).u8(0x08).u16(cmd).length(2, 4).length(4, len(inner)).raw(inner)
        elif cmd in (Command.POSTCOPY_ADVISE, Command.POSTCOPY_RAM_DISCARD, Command.RECV_BITMAP,
                     Command.ENABLE_COLO):
            w.command(cmd, rng.randbytes(rng.choice((0, 1, 16, 25))))
        else:
            w.command(cmd)

    # -- RAM ------------------------------------------------------------------

    def _ram(self, kind: str) -> None:
        rng, w = self.rng, self.w
        if kind == "start":
            for n in range(rng.randint(1, 3)):
                name = "ppc_spapr.ram" if n == 0 else rng.choice(("vga.vram", "spapr.nvram", f"mem{n}"))
                self.blocks[name] = self.page_size * rng.choice((1, 16, 4096, 1 << 20))
            w.ram_blocks(self.blocks, "x-ignore-shared" in self.caps)
            if rng.random() < 0.3:
                w.ram_flag(0x200)
        for _ in range(rng.randint(0, 12)):
            self._ram_record()
        w.ram_eos()

    def _ram_record(self) -> None:
        rng, w, ps = self.rng, self.w, self.page_size
        choice = rng.random()
        if choice < 0.06:
            w.ram_flag(0x200)
            return
        if choice < 0.065 and self.hook:
            w.ram_flag(0x80)  # HOOK: RDMA, refused
            return
        name: str | None
        if self.ram_block is not None and rng.random() < 0.7:
            block, name = self.ram_block, None  # CONTINUE: same block as the previous page
        else:
            block = name = rng.choice(list(self.blocks))
        self.ram_block = block
        size = self.blocks[block]
        addr = ps * rng.randrange(size // ps)
        if choice < 0.45:
            w.ram_page(name, addr, "zero", fill=0 if rng.random() < 0.9 else rng.randint(1, 255))
        elif choice < 0.5:
            w.mark(RAM).u64(addr | 0x08 | (0 if name else 0x20))
            if name:
                w.name(name)
            w.raw(bytes([rng.getrandbits(8)]) * ps)
        elif choice < 0.6:
            data = rng.randbytes(rng.randint(0, min(ps, 300)))
            w.mark(RAM).u64(addr | 0x40 | (0 if name else 0x20))
            if name:
                w.name(name)
            w.u8(1).length(2, len(data)).raw(data)
        elif choice < 0.65:
            w.ram_page(name, addr, "compressed")
        else:
            self._ram_run(name, size)

    def _ram_run(self, name: str | None, size: int) -> None:
        """A run of same-block pages, as the parser's fast path meets them."""
        rng, w, ps = self.rng, self.w, self.page_size
        kind = "zero" if rng.random() < 0.9 else "page"
        first = ps * rng.randrange(size // ps)
        w.ram_page(name, first, kind, page_size=ps)
        n = rng.randint(1, 32 if kind == "zero" else 2)
        w.ram_continued([(first + i * ps) % size for i in range(1, n)], kind, ps)

    # -- HPT ------------------------------------------------------------------

    def _htab(self, kind: str) -> None:
        rng, w = self.rng, self.w
        if kind == "start":
            if rng.random() < 0.3:
                w.u32(_NO_HPT)
                self.hpt_slots = None
            else:
                shift = rng.randint(18, 24)
                w.u32(shift)
                self.hpt_slots = (1 << shift) // 16
            return
        if self.hpt_slots is None or rng.random() < 0.1:
            w.u32(_NO_HPT)
            return
        w.u32(0)
        for _ in range(rng.randint(0, 4)):
            valid, invalid = rng.randint(0, 3), rng.randint(0, 3)
            index = rng.randrange(0, self.hpt_slots - valid - invalid)
            w.mark(FIELD).u32(index).length(2, valid).length(2, invalid).raw(rng.randbytes(16 * valid))
        w.mark(FIELD).u32(0).u16(0).u16(0)

    # -- devices --------------------------------------------------------------

    def _device(self) -> None:
        rng, w = self.rng, self.w
        sid = self._sid()
        name = rng.choice(("cpu", "ics", "spapr_pci", "PCIBUS", "timer", "dev", "nvram@71000000/spapr_nvram"))
        instance = rng.choice((0, 1, 0x80000000, 0x80000001))
        while (name, instance) in self.keys:
            instance += 2
        self.keys.add((name, instance))
        desc = _desc(rng, 0)
        version = rng.randint(0, 5)
        begin = w.pos
        w.full(sid, name, instance, version)
        if self.with_vmdesc and rng.random() < 0.9:
            _write_struct(rng, w, desc)
            self.devices.append({"name": name, "instance_id": instance, **desc})
        else:  # passed over: no vmdesc entry
            w.raw(rng.randbytes(rng.randint(0, 48)))
        self._close(sid, begin)

    def _spapr(self) -> None:
        rng, w = self.rng, self.w
        sid = self._sid()
        tod = rng.choice((rng.getrandbits(63), -1, 2**63 - 1, -(2**63), 0))
        subs: list[dict[str, Any]] = []
        fields = [_field("tb", "struct", 16, struct={"vmsd_name": "timebase", "version": 1, "fields": [
            _field("guest_timebase", "uint64", 8), _field("time_of_the_day_ns", "int64", 8)]})]
        begin = w.pos
        w.full(sid, "spapr", 0, 3).mark(FIELD).u64(rng.getrandbits(64)).raw(struct.pack(">q", tod))
        if rng.random() < 0.7:
            size = rng.choice((8, 32, 256))
            subs.append({"vmsd_name": "spapr_option_vector_ov5_cas", "version": 1, "fields": [
                _field("ov5_cas", "struct", size, struct={"vmsd_name": "spapr_option_vector",
                                                          "version": 1,
                                                          "fields": [_field("bitmap", "bitmap", size)]})]})
            w.subsection("spapr_option_vector_ov5_cas", 1).mark(FIELD).raw(rng.randbytes(size))
        for n, cap in enumerate(rng.sample(_SPAPR_CAPS, rng.randint(0, 4))):
            subs.append({"vmsd_name": f"spapr/cap/{cap}", "version": 1,
                         "fields": [_field(f"mig.caps[0x{n:02x}]", "uint8", 1)]})
            w.subsection(f"spapr/cap/{cap}", 1).u8(rng.choice((0, 1, 2, 3, 16, 255)))
        if rng.random() < 0.5:
            blob = rng.choice(self.fdts) if self.fdts and rng.random() < 0.3 else small_fdt()
            subs.append({"vmsd_name": "spapr_dtb", "version": 1, "fields": [
                _field("fdt_initial_size", "uint32", 4), _field("fdt_size", "uint32", 4),
                _field("fdt_blob", "buffer", len(blob))]})
            w.subsection("spapr_dtb", 1).u32(len(blob)).length(4, len(blob))
            w.marks.regions.append((w.pos, w.pos + len(blob)))
            w.raw(blob)
        self._close(sid, begin)
        if self.with_vmdesc:
            self.devices.append({"name": "spapr", "instance_id": 0, "vmsd_name": "spapr", "version": 3,
                                 "fields": fields, "subsections": subs})


@functools.cache
def small_fdt() -> bytes:
    """A small pseries-like device tree: every kind of node the summariser looks at (also the
    tree the fuzz regression tests corrupt)."""
    import libfdt

    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        sw.property_string("model", "IBM pSeries (emulated by qemu)")
        sw.property_string("compatible", "qemu,pseries")
        with sw.add_node("cpus"), sw.add_node("PowerPC,POWER9@0"):
            sw.property_string("device_type", "cpu")
            sw.property_u32("reg", 0)
            sw.property("ibm,ppc-interrupt-server#s", struct.pack(">II", 0, 1))
            sw.property_u32("cpu-version", 0x4E1200)
        with sw.add_node("memory@0"):
            sw.property_string("device_type", "memory")
            sw.property("reg", struct.pack(">QQ", 0, 512 << 20))
        with sw.add_node("interrupt-controller"):
            sw.property("compatible", b"ibm,power9-xive\0IBM,ppc-xicp\0")
        with sw.add_node("pci@800000020000000"):
            sw.property_string("device_type", "pci")
            sw.property("reg", struct.pack(">QQ", 0x800000020000000, 0x1000))
            sw.property_u32("ibm,index", 0)
            sw.property("ranges", struct.pack(">7I", 0x1000000, 0, 0, 0x2000, 0, 0, 0x10000)
                        + struct.pack(">7I", 0x43000000, 0x2100, 0, 0x2100, 0, 0x100, 0))
            sw.property("ibm,dma-window", struct.pack(">5I", 0x80000000, 0, 0, 0, 0x40000000))
    fdt = sw.as_fdt()
    fdt.pack()
    return bytes(fdt.as_bytearray())


def _field(name: str, type_: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "size": size, **extra}


def _desc(rng: random.Random, depth: int) -> dict[str, Any]:
    """A struct description; struct and capability sizes are filled in when written."""
    fields = []
    for n in range(rng.randint(0, 6 if depth else 8)):
        fields.extend(_field_descs(rng, depth, f"f{n}"))
    desc: dict[str, Any] = {"vmsd_name": rng.choice(("dev", "cpu", "ics", "sub")) + f"/{depth}",
                            "version": rng.randint(1, 3), "fields": fields}
    if depth < 2 and rng.random() < 0.3:
        desc["subsections"] = [
            {**_desc(rng, depth + 1), "vmsd_name": f"sub{depth}.{n}"} for n in range(rng.randint(1, 2))
        ]
    return desc


def _field_descs(rng: random.Random, depth: int, name: str) -> list[dict[str, Any]]:
    """One field, or the indexed entries of an uncompressed array."""
    kind = rng.choice(_LEAVES + (("struct", "vstruct") if depth < 2 else ()))
    if kind in _INTS:
        size = _INTS[kind]
    elif kind in ("bool", "nullptr"):
        size = 1
    elif kind == "float64":
        size = 8
    elif kind == "capability":
        size = len(rng.choice(_CAPS)) + 1
    elif kind == "bitmap":
        size = 8 * rng.randint(0, 4)
    else:
        size = rng.choice((0, 1, 4, 16, 64))
    desc = _field(name, kind, size)
    if kind == "struct":
        desc["struct"] = _desc(rng, depth + 1)
    elif kind == "vstruct":
        inline = _desc(rng, depth + 1)
        desc.update(fields=inline["fields"], vmsd_name=inline["vmsd_name"], version=inline["version"])
    shape = rng.random()
    if shape < 0.2 and kind != "capability":
        desc["array_len"] = rng.choice((2, 3, 300) if kind in _INTS else (2, 3))
    elif shape < 0.3:
        return [{**desc, "index": i} for i in range(rng.randint(1, 3))]
    return [desc]


def _write_struct(rng: random.Random, w: StreamWriter, desc: dict[str, Any]) -> None:
    for fdesc in desc["fields"]:
        count = fdesc.get("array_len", 1)
        if fdesc["type"] in _INTS:
            w.mark(FIELD).raw(rng.randbytes(fdesc["size"] * count))
            continue
        for i in range(count):
            start = w.pos
            _write_element(rng, w, fdesc)
            if i == 0 and fdesc["type"] in ("struct", "vstruct"):
                fdesc["size"] = w.pos - start
    for sub in desc.get("subsections", ()):
        w.subsection(sub["vmsd_name"], sub["version"])
        _write_struct(rng, w, sub)


def _write_element(rng: random.Random, w: StreamWriter, fdesc: dict[str, Any]) -> None:
    kind, size = fdesc["type"], fdesc["size"]
    w.mark(FIELD)
    if kind == "struct":
        _write_struct(rng, w, fdesc["struct"])
    elif kind == "vstruct":
        _write_struct(rng, w, fdesc)
    elif kind == "bool":
        w.u8(rng.choice((0, 1, 2)))
    elif kind == "nullptr":
        w.u8(0x30)
    elif kind == "float64":
        w.raw(struct.pack(">d", rng.choice((0.0, -1.5, float("inf"), float("nan"), 1e300))))
    elif kind == "capability":
        w.name(rng.choice([c for c in _CAPS if len(c) == size - 1]))
    else:
        w.raw(rng.randbytes(size))
