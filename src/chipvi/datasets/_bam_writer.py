"""Bulk BAM writer for simulated reads (numpy-packed records, libdeflate-compressed BGZF).

Writing one ``pysam.AlignedSegment`` per read runs at well under a million reads per second,
too slow for benchmark-sized simulations. Every simulated read has the same length and a
single ``M`` CIGAR operation, so all records have the same size: they are packed column by
column into a numpy structured array, serialised in one ``tobytes`` call and framed into
BGZF blocks compressed by libdeflate. pysam builds the index afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import deflate
import numpy as np

# BGZF blocks hold at most 64 KiB; htslib fills 0xff00 bytes so that even an incompressible
# block plus its 26-byte frame stays under the 16-bit size field.
_BGZF_BLOCK = 0xFF00
_BGZF_HEADER = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
_CHUNK = 1 << 17  # records packed per numpy pass
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

# 4-bit base codes used by BAM's SEQ field.
BASE_CODES = {"A": 1, "C": 2, "G": 4, "T": 8, "N": 15}


class BgzfWriter:
    """Frame a byte stream into BGZF blocks of at most 64 KiB, compressed with libdeflate."""

    def __init__(self, handle: BinaryIO, level: int = 1):
        self._handle = handle
        self._level = level
        self._pending = bytearray()

    def _emit(self, block) -> None:
        cdata = deflate.deflate_compress(block, self._level)
        size = len(_BGZF_HEADER) + 2 + len(cdata) + 8
        self._handle.write(_BGZF_HEADER + struct.pack("<H", size - 1))
        self._handle.write(cdata)
        self._handle.write(struct.pack("<II", deflate.crc32(block), len(block)))

    def write(self, data) -> None:
        """Append ``data`` (bytes-like); full blocks are compressed and written at once."""
        view = memoryview(data).cast("B")
        if self._pending:
            need = _BGZF_BLOCK - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < _BGZF_BLOCK:
                return
            self._emit(bytes(self._pending))
            self._pending = bytearray()
        n_full = len(view) // _BGZF_BLOCK
        for i in range(n_full):
            self._emit(view[i * _BGZF_BLOCK : (i + 1) * _BGZF_BLOCK])
        self._pending = bytearray(view[n_full * _BGZF_BLOCK :])

    def close(self) -> None:
        """Flush the last partial block and write the 28-byte EOF marker block."""
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending = bytearray()
        self._handle.write(BGZF_EOF)


def reg2bin(beg: np.ndarray, end: np.ndarray) -> np.ndarray:
    """UCSC/SAM binning-scheme bin of the 0-based half-open intervals ``[beg, end)``."""
    beg = np.asarray(beg, dtype=np.int64)
    last = np.asarray(end, dtype=np.int64) - 1
    # Short reads almost always fall inside one 16 kb bin; the general rule runs on the rest.
    out = (4681 + (beg >> 14)).astype(np.uint16)
    wider = (beg >> 14) != (last >> 14)
    if wider.any():
        out[wider] = _reg2bin_general(beg[wider], last[wider])
    return out


def _reg2bin_general(beg: np.ndarray, last: np.ndarray) -> np.ndarray:
    conditions, choices = [], []
    for shift, offset in ((14, 4681), (17, 585), (20, 73), (23, 9), (26, 1)):
        conditions.append((beg >> shift) == (last >> shift))
        choices.append(offset + (beg >> shift))
    return np.select(conditions, choices, default=0).astype(np.uint16)


def _header_bytes(chrom_sizes: Mapping[str, int], program: str) -> bytes:
    lines = ["@HD\tVN:1.6\tSO:coordinate"]
    lines += [f"@SQ\tSN:{name}\tLN:{length}" for name, length in chrom_sizes.items()]
    lines.append(f"@PG\tID:chipvi\tPN:{program}")
    text = ("\n".join(lines) + "\n").encode()
    parts = [b"BAM\x01", struct.pack("<i", len(text)), text, struct.pack("<i", len(chrom_sizes))]
    for name, length in chrom_sizes.items():
        encoded = name.encode() + b"\x00"
        parts += [struct.pack("<i", len(encoded)), encoded, struct.pack("<i", int(length))]
    return b"".join(parts)


class BamWriter:
    """Write fixed-length, single-``M``-CIGAR alignments in bulk.

    Parameters
    ----------
    path
        Output BAM path (written as is; the caller handles atomic renaming).
    chrom_sizes
        Reference names and lengths in header order.
    read_length
        Length of every read.
    name_prefix
        Read names are ``name_prefix`` followed by a zero-padded integer id.
    name_digits
        Width of the integer part of read names.
    level
        libdeflate compression level.

    Notes
    -----
    Callers pass reads already sorted by position within each chromosome and chromosomes in
    header order; the writer does not sort.
    """

    def __init__(
        self,
        path: str | Path,
        chrom_sizes: Mapping[str, int],
        *,
        read_length: int,
        name_prefix: str = "r",
        name_digits: int = 12,
        level: int = 1,
        program: str = "chipvi.datasets.simulate",
    ):
        if name_digits % 4 or name_digits <= 0:
            raise ValueError("name_digits must be a positive multiple of 4")
        prefix = name_prefix.encode()
        name_len = len(prefix) + name_digits + 1
        if name_len > 254:
            raise ValueError("read names longer than 254 bytes")
        self._handle = open(path, "wb")  # noqa: SIM115  (closed in close())
        self._bgzf = BgzfWriter(self._handle, level)
        self._bgzf.write(_header_bytes(chrom_sizes, program))
        self.read_length = int(read_length)
        self._prefix_len = len(prefix)
        self._digits = int(name_digits)
        seq_bytes = (self.read_length + 1) // 2
        self._dtype = np.dtype(
            [
                ("block_size", "<i4"),
                ("ref_id", "<i4"),
                ("pos", "<i4"),
                ("l_read_name", "u1"),
                ("mapq", "u1"),
                ("bin", "<u2"),
                ("n_cigar_op", "<u2"),
                ("flag", "<u2"),
                ("l_seq", "<i4"),
                ("next_ref_id", "<i4"),
                ("next_pos", "<i4"),
                ("tlen", "<i4"),
                ("read_name", "u1", (name_len,)),
                ("cigar", "<u4"),
                ("seq", "u1", (seq_bytes,)),
                ("qual", "u1", (self.read_length,)),
            ]
        )
        # Fields shared by every record are written once into a template that each chunk is
        # initialised from; per-read work is then only positions, flags, names and SEQ.
        template = np.zeros(1, dtype=self._dtype)
        template["block_size"] = self._dtype.itemsize - 4
        template["l_read_name"] = name_len
        template["n_cigar_op"] = 1
        template["l_seq"] = self.read_length
        template["next_ref_id"] = -1
        template["next_pos"] = -1
        template["read_name"][0, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        template["cigar"] = self.read_length << 4  # op 0 = M
        # A smooth per-cycle quality profile (Phred 38 falling to ~30): compresses like real
        # qualities do better than random values, and costs nothing per read.
        cycles = np.arange(self.read_length)
        template["qual"] = np.round(38 - 8 * (cycles / max(self.read_length - 1, 1)) ** 2)
        self._template = template
        # ASCII of 0000..9999, four bytes per entry: names are built four digits at a time.
        self._digit_table = np.array(
            [list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8
        )

    def write(
        self,
        ref_id: int,
        pos: np.ndarray,
        flag: np.ndarray,
        mapq: np.ndarray,
        name_id: np.ndarray,
        reference: np.ndarray,
        *,
        next_pos: np.ndarray | None = None,
        tlen: np.ndarray | None = None,
    ) -> None:
        """Append reads of one chromosome.

        Parameters
        ----------
        ref_id
            Index of the chromosome in the header.
        pos
            0-based leftmost positions, sorted ascending.
        flag, mapq
            SAM flags and mapping qualities.
        name_id
            Non-negative integer ids that become read names (mates share one).
        reference
            4-bit base codes of the chromosome; SEQ is copied from it.
        next_pos, tlen
            Mate position and template length for paired reads (``None``: unpaired).
        """
        if len(pos) == 0:
            return
        if int(np.max(name_id)) >= 10**self._digits:
            raise ValueError(f"read ids need more than {self._digits} digits")
        # SEQ byte k of a read at p packs bases p + 2k and p + 2k + 1: precompute the packed
        # byte for every position once, then a read's SEQ is a stride-2 window of it.
        reference = np.asarray(reference, dtype=np.uint8)
        packed = (reference << 4) | np.r_[reference[1:], np.uint8(0)]
        n_bytes = (self.read_length + 1) // 2
        seq_windows = np.lib.stride_tricks.as_strided(
            packed,
            shape=(max(len(packed) - self.read_length + 1, 0), n_bytes),
            strides=(packed.strides[0], 2 * packed.strides[0]),
            writeable=False,
        )
        # Packing in chunks bounds memory.
        for lo in range(0, len(pos), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            self._write_chunk(
                ref_id,
                pos[sl],
                flag[sl],
                mapq[sl],
                name_id[sl],
                seq_windows,
                None if next_pos is None else next_pos[sl],
                None if tlen is None else tlen[sl],
            )

    def _write_chunk(self, ref_id, pos, flag, mapq, name_id, seq_windows, next_pos, tlen) -> None:
        n = len(pos)
        rec = np.empty(n, dtype=self._dtype)
        rec[:] = self._template[0]
        rec["ref_id"] = ref_id
        rec["pos"] = pos
        rec["mapq"] = mapq
        rec["bin"] = reg2bin(pos, np.asarray(pos, dtype=np.int64) + self.read_length)
        rec["flag"] = flag
        if next_pos is not None:
            rec["next_ref_id"] = ref_id
            rec["next_pos"] = next_pos
            rec["tlen"] = tlen
        ids = np.asarray(name_id, dtype=np.int64)
        names = rec["read_name"]
        for k in range(self._digits // 4):
            group = (ids // 10 ** (self._digits - 4 * (k + 1))) % 10_000
            start = self._prefix_len + 4 * k
            names[:, start : start + 4] = self._digit_table[group]
        seq = rec["seq"]
        seq[:] = seq_windows[np.asarray(pos, dtype=np.int64)]
        if self.read_length % 2:
            seq[:, -1] &= 0xF0  # the unused low nibble of an odd-length SEQ is 0
        self._bgzf.write(rec.tobytes())

    def close(self) -> None:
        """Write the EOF block and close the file."""
        self._bgzf.close()
        self._handle.close()

    def __enter__(self) -> BamWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._handle.close()
