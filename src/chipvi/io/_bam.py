"""Checks and metadata for one BAM file: header, sort order, EOF marker, index spans per contig.

pysam reads the header; the index (``.bai`` or ``.csi``) is parsed here because we need what
pysam does not expose: the virtual file offsets spanning each reference's records.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pysam

from .._errors import ChipviInputError
from ._bgzf import BGZF_EOF, read_i32, read_u32

_HOW_TO_INDEX = "index it with `samtools index {p}` or `pysam.index({p!r})`, or pass index=True"


@dataclass(frozen=True)
class BamInfo:
    """What the counting engine needs to know about one BAM file.

    Attributes
    ----------
    path
        Absolute path of the BAM file.
    contigs
        ``(name, length)`` of every reference sequence, in header order.
    span_begin, span_end
        Virtual offsets (``coffset << 16 | uoffset``) of the first record of each reference and
        just past its last record; -1 for a reference without records.
    n_mapped
        Mapped reads per reference according to the index (-1 if the index does not say).
    record_starts
        Per reference, sorted virtual offsets of records the index lists (chunk starts, BAI
        linear-index entries, CSI bin loffsets) inside the reference's span: where its records
        can be split between counting tasks.
    """

    path: Path
    contigs: list[tuple[str, int]]
    span_begin: np.ndarray
    span_end: np.ndarray
    n_mapped: np.ndarray
    record_starts: tuple[np.ndarray, ...] = ()

    @property
    def tids(self) -> dict[str, int]:
        """Reference id of each contig name."""
        return {name: i for i, (name, _) in enumerate(self.contigs)}


def open_bam(path: str | os.PathLike, *, index: bool = False) -> BamInfo:
    """Check a BAM file and read its header and index.

    Parameters
    ----------
    path
        BAM file.
    index
        Build a missing index into a temporary directory instead of raising.

    Raises
    ------
    ChipviInputError
        If the file is missing, unreadable, not a BAM, truncated, not coordinate-sorted, or has
        no index (and ``index`` is false).
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise ChipviInputError(f"BAM file {path} does not exist.")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - len(BGZF_EOF)))
            tail = fh.read()
    except OSError as e:
        raise ChipviInputError(f"BAM file {path} cannot be read: {e.strerror}.") from e
    if magic[:4] == b"CRAM":
        raise ChipviInputError(
            f"{path} is a CRAM file; chipvi reads BAM. Convert it with the reference it was "
            f"aligned to: `samtools view -b -T reference.fa -o {path.stem}.bam {path.name}`, "
            "then `samtools index` the BAM."
        )
    if magic[:4] != b"\x1f\x8b\x08\x04":
        raise ChipviInputError(
            f"{path} is not a BAM file (no BGZF header). Convert SAM/CRAM with `samtools view -b`."
        )
    if tail != BGZF_EOF:
        raise ChipviInputError(
            f"{path} is truncated: it lacks the BGZF end-of-file block (an interrupted copy or "
            "write?). Copy or re-create the file."
        )
    try:
        with pysam.AlignmentFile(str(path), "rb", check_sq=False) as bam:
            header = bam.header.to_dict()
            contigs = list(zip(bam.references, bam.lengths, strict=True))
    except (ValueError, OSError) as e:
        raise ChipviInputError(f"{path} cannot be read as a BAM file: {e}") from e
    sort_order = header.get("HD", {}).get("SO", "")
    if sort_order in ("unsorted", "queryname"):
        raise ChipviInputError(
            f"{path} is not coordinate-sorted (header SO:{sort_order}); sort it with "
            f"`samtools sort -o sorted.bam {path}`, then index it."
        )
    if not contigs:
        raise ChipviInputError(f"{path} has no reference sequences (@SQ lines) in its header.")

    index_path = find_index(path)
    if index_path is not None:
        if index_path.stat().st_mtime < path.stat().st_mtime:
            warnings.warn(
                f"The index {index_path} is older than {path}; if the BAM changed, index it again.",
                stacklevel=3,
            )
        spans = read_index(index_path, len(contigs))
    elif index:
        spans = _build_index(path, len(contigs), sorted_header=sort_order == "coordinate")
    else:
        hint = (
            "" if sort_order == "coordinate" else " (sort it first with `samtools sort` if needed)"
        )
        raise ChipviInputError(
            f"{path} has no index (.bai/.csi); {_HOW_TO_INDEX.format(p=str(path))}{hint}."
        )
    return BamInfo(path, contigs, *spans)


def find_index(path: Path) -> Path | None:
    """The index next to ``path`` (``x.bam.bai``, ``x.bai``, ``x.bam.csi``), or None."""
    for candidate in (
        path.with_name(path.name + ".bai"),
        path.with_suffix(".bai"),
        path.with_name(path.name + ".csi"),
    ):
        if candidate.is_file():
            return candidate
    return None


def _build_index(path: Path, n_refs: int, *, sorted_header: bool):
    with tempfile.TemporaryDirectory(prefix="chipvi-index-") as tmp:
        out = Path(tmp) / (path.name + ".bai")
        try:
            pysam.index(str(path), str(out))
        except pysam.SamtoolsError as e:
            # samtools index refuses unsorted input: that is the usual reason.
            raise ChipviInputError(
                f"Could not index {path}: {str(e).strip()}. "
                + ("" if sorted_header else "Is it coordinate-sorted? ")
                + f"Sort it with `samtools sort -o sorted.bam {path}` and index the result."
            ) from e
        return read_index(out, n_refs)


def read_index(index_path: Path, n_refs: int):
    """Per-reference record spans from a ``.bai`` or ``.csi`` index.

    Returns ``(span_begin, span_end, n_mapped)`` arrays of length ``n_refs`` and a tuple of
    ``n_refs`` arrays: the ``record_starts`` of :class:`BamInfo`.
    """
    raw = index_path.read_bytes()
    try:
        if raw[:4] == b"BAI\x01":
            return _parse_index(raw, 4, n_refs, meta_bin=37450, has_loffset=False, linear=True)
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        if data[:4] == b"CSI\x01":
            min_shift, depth, l_aux = struct.unpack_from("<iii", data, 4)
            del min_shift
            meta_bin = ((1 << (3 * depth + 3)) - 1) // 7 + 1
            return _parse_index(
                data, 16 + l_aux, n_refs, meta_bin=meta_bin, has_loffset=True, linear=False
            )
    except (struct.error, OSError, EOFError, ValueError) as e:
        raise ChipviInputError(
            f"The index {index_path} is corrupt ({e}); index the BAM again."
        ) from e
    raise ChipviInputError(f"{index_path} is not a BAI or CSI index; index the BAM again.")


def _parse_index(
    data: bytes, off: int, n_refs: int, *, meta_bin: int, has_loffset: bool, linear: bool
):
    (n_ref,) = struct.unpack_from("<i", data, off)
    if n_ref != n_refs:
        raise ChipviInputError(
            f"index lists {n_ref} references but the BAM header has {n_refs}; index the BAM again."
        )
    begin = np.full(n_refs, -1, np.int64)
    end = np.full(n_refs, -1, np.int64)
    mapped = np.full(n_refs, -1, np.int64)
    # Every offset kept comes from at least 8 bytes of the index.
    found = np.empty(len(data) // 8 + 1, np.int64)
    first = np.zeros(n_refs + 1, np.int64)
    if not _scan_index(
        np.frombuffer(data, np.uint8), off + 4, meta_bin, has_loffset, linear,
        begin, end, mapped, found, first,
    ):  # fmt: skip
        raise ValueError("it ends inside a reference's bins")
    # Chunk starts, BAI linear-index entries and CSI bin loffsets are all offsets of records
    # (the specification's "first alignment" of a chunk, window or bin). Offsets outside the
    # reference's span (e.g. 0 for empty windows in old indexes) are dropped.
    starts = []
    for ref in range(n_refs):
        ref_starts = np.unique(found[first[ref] : first[ref + 1]])
        starts.append(ref_starts[(ref_starts >= begin[ref]) & (ref_starts < end[ref])])
    return begin, end, mapped, tuple(starts)


@numba.njit(cache=True, nogil=True)
def _scan_index(data, off, meta_bin, has_loffset, linear, begin, end, mapped, found, first):
    """Walk every reference's bins (and BAI linear index) of a BAI/CSI starting at ``off``.

    Fills ``begin``/``end`` (lowest chunk start, highest chunk end), ``mapped`` (from the
    pseudo-bin) and ``found[first[r]:first[r + 1]]``: reference r's record offsets. A compiled
    walk: a human-genome index has ~150 k bins, ~1.4 s as a Python loop. Returns False if the
    data end early.
    """
    size = data.size
    n = 0
    head = 16 if has_loffset else 8
    for ref in range(begin.size):
        first[ref] = n
        if off + 4 > size:
            return False
        n_bin = read_i32(data, off)
        off += 4
        lo, hi = np.int64(-1), np.int64(-1)
        for _ in range(n_bin):
            if off + head > size:
                return False
            bin_id = read_u32(data, off)
            if has_loffset:
                found[n] = _read_u64(data, off + 4)
                n += 1
            n_chunk = read_i32(data, off + head - 4)
            off += head
            if n_chunk < 0 or off + 16 * n_chunk > size:
                return False
            if bin_id == meta_bin:
                # Pseudo-bin: (first, last) virtual offsets and (mapped, unmapped) counts.
                if n_chunk >= 2:
                    mapped[ref] = _read_u64(data, off + 16)
            else:
                for c in range(n_chunk):
                    c_lo = _read_u64(data, off + 16 * c)
                    c_hi = _read_u64(data, off + 16 * c + 8)
                    found[n] = c_lo
                    n += 1
                    lo = c_lo if lo < 0 else min(lo, c_lo)
                    hi = max(hi, c_hi)
            off += 16 * n_chunk
        begin[ref], end[ref] = lo, hi
        if linear:
            if off + 4 > size:
                return False
            n_intv = read_i32(data, off)
            off += 4
            if n_intv < 0 or off + 8 * n_intv > size:
                return False
            for i in range(n_intv):
                found[n] = _read_u64(data, off + 8 * i)
                n += 1
            off += 8 * n_intv
    first[begin.size] = n
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _read_u64(buf, i):
    # Virtual offsets stay below 2**63 (compressed offsets have 48 bits).
    return read_u32(buf, i) | (read_u32(buf, i + 4) << 32)
