"""Constants of QEMU's migration stream, format version 3.

Values are those of migration/savevm.c (``QEMU_VM_*``, ``enum qemu_vm_cmd``)
and migration/ram.c (``RAM_SAVE_FLAG_*``), identical in QEMU 5.2 to 10.0.
"""

from __future__ import annotations

import enum

FILE_MAGIC = 0x5145564D  # "QEVM"
FILE_VERSION = 3
FILE_VERSION_COMPAT = 2  # pre-0.13 streams; QEMU refuses them too


class RecordType(enum.IntEnum):
    """The byte that starts every top-level record (savevm.c ``QEMU_VM_*``)."""

    EOF = 0x00
    SECTION_START = 0x01
    SECTION_PART = 0x02
    SECTION_END = 0x03
    SECTION_FULL = 0x04
    SUBSECTION = 0x05
    VMDESCRIPTION = 0x06
    CONFIGURATION = 0x07
    COMMAND = 0x08
    SECTION_FOOTER = 0x7E


class Command(enum.IntEnum):
    """``QEMU_VM_COMMAND`` sub-commands (savevm.c ``enum qemu_vm_cmd``)."""

    INVALID = 0
    OPEN_RETURN_PATH = 1
    PING = 2
    POSTCOPY_ADVISE = 3
    POSTCOPY_LISTEN = 4
    POSTCOPY_RUN = 5
    POSTCOPY_RAM_DISCARD = 6
    PACKAGED = 7
    ENABLE_COLO = 8
    POSTCOPY_RESUME = 9
    RECV_BITMAP = 10
    SWITCHOVER_START = 11


# Fixed payload lengths of commands (savevm.c ``mig_cmd_args``); others vary.
COMMAND_LENGTHS: dict[Command, int] = {
    Command.OPEN_RETURN_PATH: 0,
    Command.PING: 4,
    Command.POSTCOPY_LISTEN: 0,
    Command.POSTCOPY_RUN: 0,
    Command.POSTCOPY_RESUME: 0,
    Command.PACKAGED: 4,
    Command.SWITCHOVER_START: 0,
}

# RAM section flags, in the low bits of each be64 page header (ram.c, ram.h).
# 0x02 is RAM_SAVE_FLAG_ZERO, formerly RAM_SAVE_FLAG_COMPRESS (a page filled
# with one byte, 0 in practice); same wire format. COMPRESS_PAGE was removed
# in QEMU 9.1; 0x01 (FULL) is obsolete since 2009.
RAM_ZERO = 0x02
RAM_MEM_SIZE = 0x04
RAM_PAGE = 0x08
RAM_EOS = 0x10
RAM_CONTINUE = 0x20
RAM_XBZRLE = 0x40
RAM_HOOK = 0x80
RAM_COMPRESS_PAGE = 0x100
RAM_MULTIFD_FLUSH = 0x200

RAM_SECTION_VERSION = 4  # ram_load() refuses any other
HTAB_SECTION_VERSION = 1  # htab_load() refuses any other
HASH_PTE_SIZE_64 = 16  # bytes per hash page table entry (target/ppc/mmu-hash64.h)

# ppc64's TARGET_PAGE_BITS (target/ppc/cpu-param.h); the vmdesc's page_size
# or the configuration's target-page-bits subsection override it.
PPC64_TARGET_PAGE_SIZE = 4096

# Section idstrs with decoders of their own (no vmdesc entry: save_live handlers).
RAM_IDSTR = "ram"
HTAB_IDSTR = "spapr/htab"
