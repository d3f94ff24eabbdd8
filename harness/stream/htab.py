"""Decoder for ``spapr/htab`` (version 1): the guest's hash page table, chunk headers only.

Format (hw/ppc/spapr.c htab_save_setup/iterate/complete, htab_load): each
section starts with a be32 header: ``0xffffffff`` when there is no HPT (a
radix guest), the HPT's log2 size in the setup section, or 0 followed by
chunks - be32 index, be16 n_valid, be16 n_invalid, then n_valid 16-byte
HPTEs - until an all-zero chunk header. KVM's kvmppc_save_htab writes the
same chunk format.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.stream.format import HASH_PTE_SIZE_64
from harness.stream.reader import StreamReader

NO_HPT = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class HtabPiece:
    """What one ``spapr/htab`` section carried."""

    header: int  # NO_HPT, the HPT shift (setup), or 0 (chunks follow)
    chunks: int
    valid: int
    invalid: int

    @property
    def no_hpt(self) -> bool:
        return self.header == NO_HPT


class HtabDecoder:
    """Stateful across one stream's htab sections (remembers the HPT size)."""

    def __init__(self) -> None:
        self.shift: int | None = None

    def read(self, r: StreamReader) -> HtabPiece:
        header = r.u32()
        if header == NO_HPT:
            return HtabPiece(header, 0, 0, 0)
        if header:
            if not 18 <= header <= 46:
                raise r.error(f"HPT shift {header} outside the range QEMU allocates (18..46)")
            self.shift = header
            return HtabPiece(header, 0, 0, 0)
        slots = None if self.shift is None else (1 << self.shift) // HASH_PTE_SIZE_64
        chunks = valid = invalid = 0
        while True:
            here = r.tell()
            index = r.u32()
            n_valid = r.u16()
            n_invalid = r.u16()
            if index == 0 and n_valid == 0 and n_invalid == 0:
                return HtabPiece(0, chunks, valid, invalid)
            if slots is not None and index + n_valid + n_invalid > slots:
                raise r.error(
                    f"HPT chunk at index {index} ({n_valid}+{n_invalid} entries) beyond the "
                    f"{slots} entries of a 2^{self.shift} byte HPT", here
                )
            r.skip(n_valid * HASH_PTE_SIZE_64)
            chunks += 1
            valid += n_valid
            invalid += n_invalid
