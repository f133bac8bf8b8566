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
_CHUNK = 1 << 18  # records packed per numpy pass
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

# 4-bit base codes used by BAM's SEQ field.
BASE_CODES = {"A": 1, "C": 2, "G": 4, "T": 8, "N": 15}


class BgzfWriter:
    """Frame a byte stream into BGZF blocks of at most 64 KiB, compressed with libdeflate."""

    def __init__(self, handle: BinaryIO, level: int = 4):
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
        name_digits: int = 10,
        level: int = 4,
        program: str = "chipvi.datasets.simulate",
    ):
        self._handle = open(path, "wb")  # noqa: SIM115  (closed in close())
        self._bgzf = BgzfWriter(self._handle, level)
        self._bgzf.write(_header_bytes(chrom_sizes, program))
        self.read_length = int(read_length)
        self._prefix = np.frombuffer(name_prefix.encode(), dtype=np.uint8)
        self._digits = int(name_digits)
        name_len = len(self._prefix) + self._digits + 1
        if name_len > 254:
            raise ValueError("read names longer than 254 bytes")
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
        # A smooth per-cycle quality profile (Phred 38 falling to ~30): compresses like real
        # qualities do better than random values, and costs nothing per read.
        cycles = np.arange(self.read_length)
        self._qual = np.round(38 - 8 * (cycles / max(self.read_length - 1, 1)) ** 2).astype(
            np.uint8
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
            Integer ids that become read names (mates share one).
        reference
            4-bit base codes of the chromosome; SEQ is copied from it.
        next_pos, tlen
            Mate position and template length for paired reads (``None``: unpaired).
        """
        # Packing in chunks bounds memory (the SEQ gather builds an n x read_length matrix).
        for lo in range(0, len(pos), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            self._write_chunk(
                ref_id,
                pos[sl],
                flag[sl],
                mapq[sl],
                name_id[sl],
                reference,
                None if next_pos is None else next_pos[sl],
                None if tlen is None else tlen[sl],
            )

    def _write_chunk(self, ref_id, pos, flag, mapq, name_id, reference, next_pos, tlen) -> None:
        n = len(pos)
        rec = np.zeros(n, dtype=self._dtype)
        rec["block_size"] = self._dtype.itemsize - 4
        rec["ref_id"] = ref_id
        rec["pos"] = pos
        rec["l_read_name"] = self._dtype["read_name"].shape[0]
        rec["mapq"] = mapq
        rec["bin"] = reg2bin(pos, np.asarray(pos, dtype=np.int64) + self.read_length)
        rec["n_cigar_op"] = 1
        rec["flag"] = flag
        rec["l_seq"] = self.read_length
        if next_pos is None:
            rec["next_ref_id"] = -1
            rec["next_pos"] = -1
        else:
            rec["next_ref_id"] = ref_id
            rec["next_pos"] = next_pos
            rec["tlen"] = tlen
        names = rec["read_name"]
        n_prefix = len(self._prefix)
        names[:, :n_prefix] = self._prefix
        ids = np.asarray(name_id, dtype=np.int64)
        for k in range(self._digits):
            power = 10 ** (self._digits - 1 - k)
            names[:, n_prefix + k] = 48 + (ids // power) % 10
        rec["cigar"] = self.read_length << 4  # op 0 = M
        # Row gather from a strided window view: no n x read_length index matrix.
        windows = np.lib.stride_tricks.sliding_window_view(reference, self.read_length)
        bases = windows[np.asarray(pos, dtype=np.int64)]
        seq = rec["seq"]
        seq[:] = bases[:, 0::2] << 4
        seq[:, : self.read_length // 2] |= bases[:, 1::2]
        rec["qual"] = self._qual
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
