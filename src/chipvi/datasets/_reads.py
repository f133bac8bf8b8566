"""Reads of a simulated library: fragments from per-bin counts, written as a sorted BAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam

from .._utils import atomic_path
from ._bam_writer import BamWriter
from ._genome import TRUTH_BIN_SIZE, Genome

_FLAG_PAIRED, _FLAG_PROPER, _FLAG_REVERSE, _FLAG_MATE_REVERSE = 0x1, 0x2, 0x10, 0x20
_FLAG_READ1, _FLAG_READ2, _FLAG_DUPLICATE = 0x40, 0x80, 0x400


def random_reference(rng: np.random.Generator, gc: np.ndarray, length: int) -> np.ndarray:
    """4-bit base codes whose local GC fraction follows the per-bin covariate ``gc``."""
    threshold = np.repeat(np.round(gc * 65536).astype(np.uint32), TRUTH_BIN_SIZE)[:length]
    draw = rng.integers(0, 65536, length, dtype=np.uint32)
    # One 16-bit draw per base: below the threshold means G/C; its lowest bit picks which.
    choice = 2 * (draw < threshold) + (draw & 1)
    return np.array([1, 8, 2, 4], dtype=np.uint8)[choice]  # A, T, C, G


def _jackpot_fragments(
    rng: np.random.Generator,
    genome: Genome,
    jackpots: tuple[np.ndarray, np.ndarray],
    lo: int,
    hi: int,
    fragment_length: int,
    fragment_sd: float,
    read_length: int,
    jackpot_flagged: float,
) -> dict:
    """Copies of one fragment per jackpot in bins ``[lo, hi)``; few flagged as duplicates."""
    length = int(genome.end[hi - 1])
    jp_bins, jp_sizes = jackpots
    here = (jp_bins >= lo) & (jp_bins < hi)
    bins, sizes = jp_bins[here], jp_sizes[here]
    k = len(bins)
    flen = np.clip(
        np.round(rng.normal(fragment_length, fragment_sd, k)).astype(np.int64),
        read_length,
        min(2 * fragment_length, length),
    )
    centre = genome.start[bins] + rng.integers(0, genome.width[bins].astype(np.int64))
    fstart = np.clip(centre - flen // 2, 0, length - flen)
    reverse = rng.random(k) < 0.5
    duplicate = rng.random(int(sizes.sum())) < jackpot_flagged
    first_copy = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
    duplicate[first_copy[sizes > 0]] = False  # the original molecule is never the duplicate
    rows = [
        {
            "pos": int(fstart[i]),
            "flen": int(flen[i]),
            "reverse": bool(reverse[i]),
            "n_reads": int(sizes[i]),
            "n_flagged": int(duplicate[first_copy[i] : first_copy[i] + sizes[i]].sum()),
        }
        for i in range(k)
    ]
    return {
        "fstart": np.repeat(fstart, sizes),
        "flen": np.repeat(flen, sizes),
        "reverse": np.repeat(reverse, sizes),
        "duplicate": duplicate,
        "rows": rows,
    }


def write_library(
    path: Path,
    genome: Genome,
    counts: np.ndarray,
    low_mappability: np.ndarray,
    jackpots: tuple[np.ndarray, np.ndarray] | None,
    *,
    rng: np.random.Generator,
    references: list[np.ndarray],
    fragment_length: int,
    fragment_sd: float,
    read_length: int,
    paired: bool,
    jackpot_flagged: float,
    compresslevel: int,
    overwrite: bool,
    name_prefix: str,
) -> list[dict]:
    """Draw fragments from per-bin counts, write a sorted BAM and index it."""
    jackpot_rows = []
    next_name = 0
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer = BamWriter(
            tmp,
            genome.chrom_sizes,
            read_length=read_length,
            name_prefix=name_prefix,
            level=compresslevel,
        )
        for c, (chrom, length) in enumerate(genome.chrom_sizes.items()):
            lo, hi = genome.offsets[c], genome.offsets[c + 1]
            bins = np.repeat(np.arange(lo, hi), counts[lo:hi])
            n = len(bins)
            centre = genome.start[bins] + rng.random(n) * genome.width[bins]
            flen = np.round(rng.normal(fragment_length, fragment_sd, n)).astype(np.int64)
            flen = np.clip(flen, read_length, min(2 * fragment_length, length))
            fstart = np.clip(np.round(centre - flen / 2).astype(np.int64), 0, length - flen)
            reverse = rng.random(n) < 0.5
            mapq = np.where(rng.random(n) < 0.94, 60, rng.integers(0, 60, n))
            mapq = np.where(low_mappability[bins], rng.integers(0, 4, n), mapq).astype(np.uint8)
            duplicate = np.zeros(n, dtype=bool)
            if jackpots is not None:
                extra = _jackpot_fragments(
                    rng,
                    genome,
                    jackpots,
                    lo,
                    hi,
                    fragment_length,
                    fragment_sd,
                    read_length,
                    jackpot_flagged,
                )
                fstart = np.r_[fstart, extra["fstart"]]
                flen = np.r_[flen, extra["flen"]]
                reverse = np.r_[reverse, extra["reverse"]]
                mapq = np.r_[mapq, np.full(len(extra["fstart"]), 60, dtype=np.uint8)]
                duplicate = np.r_[duplicate, extra["duplicate"]]
                for row in extra["rows"]:
                    if row["reverse"] and not paired:
                        row["pos"] += row.pop("flen") - read_length
                    else:
                        row.pop("flen")
                    jackpot_rows.append({"chrom": chrom, **row})
            n = len(fstart)
            name_id = next_name + np.arange(n)
            next_name += n
            fend = fstart + flen
            dup_flag = np.where(duplicate, _FLAG_DUPLICATE, 0)
            if not paired:
                pos = np.where(reverse, fend - read_length, fstart)
                flag = np.where(reverse, _FLAG_REVERSE, 0) | dup_flag
                order = np.argsort(pos, kind="stable")
                writer.write(c, pos[order], flag[order], mapq[order], name_id[order], references[c])
                continue
            # Paired: mate 1 lies on the fragment's strand; mates face each other.
            left, right = fstart, fend - read_length
            base = _FLAG_PAIRED | _FLAG_PROPER | dup_flag
            flag1 = base | _FLAG_READ1 | np.where(reverse, _FLAG_REVERSE, _FLAG_MATE_REVERSE)
            flag2 = base | _FLAG_READ2 | np.where(reverse, _FLAG_MATE_REVERSE, _FLAG_REVERSE)
            pos1 = np.where(reverse, right, left)
            pos2 = np.where(reverse, left, right)
            tlen1 = np.where(reverse, -flen, flen)
            pos = np.r_[pos1, pos2]
            order = np.argsort(pos, kind="stable")
            writer.write(
                c,
                pos[order],
                np.r_[flag1, flag2][order],
                np.r_[mapq, mapq][order],
                np.r_[name_id, name_id][order],
                references[c],
                next_pos=np.r_[pos2, pos1][order],
                tlen=np.r_[tlen1, -tlen1][order],
            )
        writer.close()
    index_path = path.with_name(path.name + ".bai")
    if index_path.exists():
        index_path.unlink()
    pysam.index(str(path))
    return jackpot_rows
