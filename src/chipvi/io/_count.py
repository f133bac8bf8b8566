"""Numba kernels that walk BAM records and bin fragment centres.

The kernels see raw BGZF bytes (``comp``) of one reference sequence, inflate block by block into
a small working buffer and parse each record in place: no per-read Python objects, and the GIL
is released for the whole loop. The counting rule is documented in :func:`chipvi.read_bams`.
"""

from __future__ import annotations

import numba
import numpy as np

from ._bgzf import (
    ERR_BUFFER,
    ERR_HEADER,
    OK,
    block_size,
    inflate_block,
    read_i32,
    read_u16,
    read_u32,
)

# SAM flag bits.
PAIRED = 0x1
PROPER_PAIR = 0x2
UNMAPPED = 0x4
MATE_UNMAPPED = 0x8
REVERSE = 0x10
READ1 = 0x40
READ2 = 0x80
SECONDARY = 0x100
QCFAIL = 0x200
DUPLICATE = 0x400
SUPPLEMENTARY = 0x800
DROPPED = UNMAPPED | SECONDARY | QCFAIL | SUPPLEMENTARY

# Slots of the ``state`` array that carries a region's progress between kernel calls (the
# compressed bytes of a reference arrive in pieces).
S_FILL = 0  # bytes of inflated data in the working buffer
S_POS = 1  # start of the next unparsed record in the working buffer
S_DONE = 2  # 1 once a record of another reference is reached
S_SKIP = 3  # bytes to skip in the first block (the index's within-block offset), -1 after
S_COUNTED = 4  # reads (fragments) counted
S_RECORDS = 5  # records seen on this reference
S_STOP = 6  # position in the working buffer where the region stops, -1 until its block is read
S_LOW = 7  # lowest and highest bin counted into (S_HIGH = -1: none yet)
S_HIGH = 8
S_DUP_POS = 9  # leftmost position of the reads in the duplicate table (-1: none yet)
S_DUP_N = 10  # keys in the duplicate table
N_STATE = 11

#: Distinct (strand, template length) keys tracked at one position for ``max_per_position``;
#: reads beyond that many distinct keys at one position are all counted.
DUP_KEYS = 256

#: Kernel error code: a record's size field is impossible (corrupt data).
ERR_RECORD = 5
#: Kernel error code: the stop offset is not at a record start (the index does not match).
ERR_STOP = 6


def new_state(first_block_skip: int) -> np.ndarray:
    """State for a region whose first record is ``first_block_skip`` bytes into its first block."""
    state = np.zeros(N_STATE, np.int64)
    state[S_SKIP] = first_block_skip
    state[S_STOP] = -1
    state[S_LOW] = np.iinfo(np.int64).max
    state[S_HIGH] = -1
    state[S_DUP_POS] = -1
    return state


def new_duplicate_table() -> np.ndarray:
    """Working table of ``count_blocks`` for ``max_per_position``: keys and their counts."""
    return np.zeros((2, DUP_KEYS), np.int64)


@numba.njit(cache=True, nogil=True, inline="always")
def _within_position_limit(buf, rec, state, dup, limit):
    """Count the record at ``buf[rec]`` against ``limit`` reads per (position, strand, TLEN).

    Reads are sorted by leftmost position, so the table holds the keys seen at the current
    position only. Returns False when ``limit`` reads with this key were already counted.
    """
    pos = np.int64(read_i32(buf, rec + 8))
    key = np.int64(read_i32(buf, rec + 32)) * 2 + (1 if read_u16(buf, rec + 18) & REVERSE else 0)
    if pos != state[S_DUP_POS]:
        state[S_DUP_POS] = pos
        state[S_DUP_N] = 0
    n = state[S_DUP_N]
    for k in range(n):
        if dup[0, k] == key:
            if dup[1, k] >= limit:
                return False
            dup[1, k] += 1
            return True
    if n < dup.shape[1]:
        dup[0, n] = key
        dup[1, n] = 1
        state[S_DUP_N] = n + 1
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _reference_length(buf, rec):
    """Reference bases covered by the CIGAR of the record starting at ``buf[rec]``."""
    l_read_name = np.int64(buf[rec + 12])
    n_cigar = read_u16(buf, rec + 16)
    c = rec + 36 + l_read_name
    length = 0
    for k in range(n_cigar):
        op = read_u32(buf, c + 4 * k)
        kind = op & 0xF
        # M, D, N, =, X consume the reference.
        if kind == 0 or kind == 2 or kind == 3 or kind == 7 or kind == 8:
            length += op >> 4
    return length


@numba.njit(cache=True, nogil=True, inline="always")
def _record_bin(
    buf,
    rec,
    chrom_len,
    bin_size,
    fragment_length,
    half_fragment,
    min_mapq,
    keep_duplicates,
):
    """The bin the counting rule puts the record starting at ``buf[rec]`` in, -1 if none.

    ``half_fragment`` is ``fragment_length // 2``, computed once by the caller (a division per
    read is measurable here).
    """
    flag = read_u16(buf, rec + 18)
    if flag & DROPPED:
        return -1
    if not keep_duplicates and flag & DUPLICATE:
        return -1
    mapq = np.int64(buf[rec + 13])
    if mapq < min_mapq:
        return -1
    pos = read_i32(buf, rec + 8)
    # Proper pair: flag 0x2, mate mapped on the same reference, non-zero TLEN.
    tlen = 0
    if (
        flag & PAIRED
        and flag & PROPER_PAIR
        and not flag & MATE_UNMAPPED
        and read_i32(buf, rec + 24) == read_i32(buf, rec + 4)
    ):
        tlen = read_i32(buf, rec + 32)
    if tlen != 0:
        # One count per fragment, at its midpoint, from mate 1.
        if not flag & READ1:
            return -1
        mpos = read_i32(buf, rec + 28)
        start = pos if pos < mpos else mpos
        centre = start + (tlen if tlen > 0 else -tlen) // 2
    else:
        if flag & PAIRED and flag & READ2 and not flag & MATE_UNMAPPED:
            # Not a proper pair: the template is counted once, via mate 1 (mate 2 only stands in
            # when mate 1 is unmapped).
            return -1
        # Single-end rule: the fragment [s, s + L) starts at the 5' end and runs along the
        # strand; count its centre s + L // 2.
        if flag & REVERSE:
            ref_len = _reference_length(buf, rec)
            if ref_len < 1:
                ref_len = 1  # no CIGAR: treat as a 1-base alignment, like htslib's bam_endpos
            centre = pos + ref_len - fragment_length + half_fragment
        else:
            centre = pos + half_fragment
    if centre < 0:
        centre = 0
    elif centre >= chrom_len:
        centre = chrom_len - 1
    return centre // bin_size


@numba.njit(cache=True, nogil=True)
def count_blocks(
    handle,
    comp,
    comp_end,
    comp_offset,
    stop,
    work,
    state,
    tid,
    chrom_len,
    bin_size,
    fragment_length,
    min_mapq,
    keep_duplicates,
    max_per_position,
    dup,
    check_crc,
    counts,
    mapq_sum,
):
    """Inflate the complete blocks of ``comp[:comp_end]`` and count the records of ``tid``.

    ``max_per_position`` > 0 counts at most that many reads per (leftmost position, strand,
    TLEN), with ``dup`` (:func:`new_duplicate_table`) as working memory; 0 turns it off.

    ``comp[0]`` is at byte ``comp_offset`` of the file. Counting stops at the first record of
    another reference, or at the record starting at virtual offset ``stop`` (-1: no such stop),
    so that a reference can be split between tasks at record starts.

    Returns ``(error_code, bytes_consumed)``; the caller passes the rest again with more data.
    ``ERR_BUFFER`` means a record does not fit ``work``: grow it (keeping its content) and call
    again.
    """
    half_fragment = fragment_length // 2
    stop_block = stop >> 16 if stop >= 0 else -1
    cpos = 0
    while cpos < comp_end and state[S_DONE] == 0:
        bsize = block_size(comp, cpos, comp_end)
        if bsize == 0:
            break
        if bsize < 0:
            return ERR_HEADER, cpos
        isize = read_u32(comp, cpos + bsize - 4)
        fill = state[S_FILL]
        if fill + isize > work.size:
            # Move the unparsed tail (a partial record) to the front of the working buffer.
            p = state[S_POS]
            n = fill - p
            if p == 0 or n + isize > work.size:
                return ERR_BUFFER, cpos
            work[:n] = work[p:fill]
            state[S_POS] = 0
            state[S_FILL] = n
            if state[S_STOP] >= 0:
                state[S_STOP] -= p
            fill = n
        if comp_offset + cpos == stop_block:
            state[S_STOP] = fill + (stop & 0xFFFF)
        err, got = inflate_block(handle, comp, cpos, bsize, work, fill, check_crc)
        if err != OK:
            return err, cpos
        if state[S_SKIP] >= 0:
            state[S_POS] = fill + state[S_SKIP]
            state[S_SKIP] = -1
        fill += got
        state[S_FILL] = fill
        cpos += bsize

        p = state[S_POS]
        stop_at = state[S_STOP]
        counted = 0
        records = 0
        run_bin = -1  # the bin of the current run of counted reads, its reads and MAPQ sum
        low = state[S_LOW]
        high = state[S_HIGH]
        run_n = 0
        run_mapq = np.int64(0)
        while True:
            if 0 <= stop_at <= p:
                if stop_at < p:
                    state[S_POS] = p
                    return ERR_STOP, cpos
                state[S_DONE] = 1
                break
            if fill - p < 4:
                break
            rec_size = read_i32(work, p)
            if rec_size < 32:
                state[S_POS] = p
                return ERR_RECORD, cpos
            if fill - p < 4 + rec_size:
                break
            if read_i32(work, p + 4) != tid:
                state[S_DONE] = 1
                break
            # Name and CIGAR must lie inside the record (numba does not bounds-check).
            if 32 + np.int64(work[p + 12]) + 4 * read_u16(work, p + 16) > rec_size:
                state[S_POS] = p
                return ERR_RECORD, cpos
            b = _record_bin(
                work,
                p,
                chrom_len,
                bin_size,
                fragment_length,
                half_fragment,
                min_mapq,
                keep_duplicates,
            )
            if b >= 0 and max_per_position > 0:
                if not _within_position_limit(work, p, state, dup, max_per_position):
                    b = -1
            if b >= 0:
                counted += 1
                # Sorted reads come in runs of the same bin: add a run at once, which costs
                # far less than a read-modify-write of both arrays per read (~30 ns).
                if b == run_bin:
                    run_n += 1
                    run_mapq += np.int64(work[p + 13])
                else:
                    if run_bin >= 0:
                        counts[run_bin] += run_n
                        mapq_sum[run_bin] += run_mapq
                        low = min(low, run_bin)
                        high = max(high, run_bin)
                    run_bin = b
                    run_n = 1
                    run_mapq = np.int64(work[p + 13])
            records += 1
            p += 4 + rec_size
        if run_bin >= 0:
            counts[run_bin] += run_n
            mapq_sum[run_bin] += run_mapq
            low = min(low, run_bin)
            high = max(high, run_bin)
        state[S_LOW] = low
        state[S_HIGH] = high
        state[S_POS] = p
        state[S_COUNTED] += counted
        state[S_RECORDS] += records
        if p == fill and state[S_DONE] == 0:
            # Everything parsed: restart at the front, so the buffer never needs compacting.
            state[S_POS] = 0
            state[S_FILL] = 0
            if stop_at >= 0:
                state[S_STOP] = stop_at - p
    return OK, cpos


@numba.njit(cache=True, nogil=True)
def store_column(counts, mapq_sum, x_col, mapq_col):
    """Write a reference's counts and mean MAPQ into (possibly strided) output columns."""
    for i in range(counts.size):
        c = counts[i]
        x_col[i] = c
        mapq_col[i] = np.float32(mapq_sum[i] / c) if c > 0 else np.float32(0.0)
