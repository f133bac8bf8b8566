"""Strand cross-correlation (ENCODE / phantompeakqualtools): fragment length, NSC, RSC.

Reads' 5′ ends are collected per strand and chromosome (pysam, one pass per BAM; this is QC,
not the hot path). For a shift s, the cross-correlation is the Pearson correlation between the
+ strand 5′-end counts at x and the − strand counts at x + s, averaged over chromosomes weighted
by their read counts. Only pairs of ends closer than the largest shift contribute to the
covariance, so it is computed from sorted position arrays, never from genome-length vectors.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import ChipviInputError
from .._store import store
from ..io import BinStore, is_store, open_store

_CHUNK = 200_000


def _five_prime_ends(
    bam_path: Path, chroms: Sequence[str] | None, min_mapq: int, keep_duplicates: bool
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, int], int]:
    """Per chromosome: sorted 5′ positions of + and − strand reads; chromosome lengths; read length."""
    import pysam

    if not bam_path.is_file():
        raise ChipviInputError(f"BAM file {bam_path} does not exist.")
    ends: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    lengths: list[int] = []
    with pysam.AlignmentFile(str(bam_path), "rb") as bam:
        sizes = dict(zip(bam.references, bam.lengths, strict=True))
        wanted = list(sizes) if chroms is None else list(chroms)
        unknown = [c for c in wanted if c not in sizes]
        if unknown:
            raise ChipviInputError(f"{bam_path} has no chromosome(s) {unknown}.")
        plus: dict[str, list[int]] = {c: [] for c in wanted}
        minus: dict[str, list[int]] = {c: [] for c in wanted}
        # An indexed BAM is read per chromosome; an unindexed one (QC straight after
        # `chipvi bin --index`, whose indexes were temporary) in one pass over the file.
        if bam.has_index():
            reads = itertools.chain.from_iterable(bam.fetch(c) for c in wanted)
        else:
            reads = bam.fetch(until_eof=True)
        for read in reads:
            if (
                read.is_unmapped
                or read.reference_name not in plus
                or read.is_secondary
                or read.is_supplementary
                or read.is_qcfail
                or (read.is_duplicate and not keep_duplicates)
                or read.mapping_quality < min_mapq
                or (read.is_paired and not read.is_read1)
            ):
                continue
            if read.is_reverse:
                minus[read.reference_name].append(read.reference_end - 1)
            else:
                plus[read.reference_name].append(read.reference_start)
            if len(lengths) < 100_000:
                lengths.append(read.query_length or read.infer_query_length() or 0)
        for chrom in wanted:
            ends[chrom] = (
                np.sort(np.asarray(plus[chrom], np.int64)),
                np.sort(np.asarray(minus[chrom], np.int64)),
            )
    read_length = int(np.median(lengths)) if lengths else 0
    return ends, {c: sizes[c] for c in wanted}, read_length


def _pair_products(plus: np.ndarray, minus: np.ndarray, max_shift: int) -> np.ndarray:
    """S[s] = Σ_x plus(x)·minus(x + s) for s = 0..max_shift (counts of end pairs at distance s)."""
    out = np.zeros(max_shift + 1, dtype=np.float64)
    if plus.size == 0 or minus.size == 0:
        return out
    for lo in range(0, plus.size, _CHUNK):
        p = plus[lo : lo + _CHUNK]
        first = np.searchsorted(minus, p, side="left")
        last = np.searchsorted(minus, p + max_shift, side="right")
        n = last - first
        total = int(n.sum())
        if total == 0:
            continue
        owner = np.repeat(np.arange(p.size), n)
        offset = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
        dist = minus[first[owner] + offset] - p[owner]
        out += np.bincount(dist, minlength=max_shift + 1)[: max_shift + 1]
    return out


def _count_moments(pos: np.ndarray, length: float) -> tuple[float, float]:
    """Mean and variance over a chromosome of the per-base count vector of these positions."""
    _, mult = np.unique(pos, return_counts=True)
    mean = pos.size / length
    return mean, max(float((mult.astype(np.float64) ** 2).sum()) / length - mean**2, 1e-300)


def _cross_correlation(ends, sizes, max_shift: int) -> np.ndarray:
    """Read-weighted mean over chromosomes of the strand Pearson correlation at each shift."""
    total = np.zeros(max_shift + 1)
    weight = 0.0
    shifts = np.arange(max_shift + 1)
    for chrom, (plus, minus) in ends.items():
        if plus.size == 0 or minus.size == 0:
            continue
        length = float(sizes[chrom])
        overlap = length - shifts

        mp, vp = _count_moments(plus, length)
        mm, vm = _count_moments(minus, length)
        cov = _pair_products(plus, minus, max_shift) / overlap - mp * mm
        total += (cov / np.sqrt(vp * vm)) * (plus.size + minus.size)
        weight += plus.size + minus.size
    if weight == 0:
        raise ChipviInputError("No reads passed the filters on both strands; nothing to correlate.")
    return total / weight


def _quality_tag(rsc: float) -> int:
    """ENCODE quality tag from RSC: -2 very low … 2 very high."""
    if not np.isfinite(rsc):
        return -2
    return int(np.digitize(rsc, [0.25, 0.5, 1.0, 1.5])) - 2


def strand_cross_correlation(
    data: AnnData | BinStore | Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    chroms: Sequence[str] | None = None,
    max_shift: int = 1500,
    min_mapq: int = 10,
    keep_duplicates: bool = False,
    exclude: tuple[int, int] | None = None,
    key_added: str | None = "chipvi_strand_cc",
) -> pd.DataFrame:
    """Strand cross-correlation QC of ChIP BAM files as ENCODE defines it.

    The fragment length is the shift with the highest cross-correlation outside the "phantom"
    peak at the read length; ``NSC = CC(fragment) / min CC`` and
    ``RSC = (CC(fragment) − min CC) / (CC(read length) − min CC)``, with ``min CC`` over all
    shifts 0..``max_shift``. ENCODE flags NSC < 1.05 and RSC < 0.8 as weak enrichment;
    ``quality_tag`` is phantompeakqualtools' −2..2 scale from RSC (<0.25, <0.5, <1, <1.5, ≥1.5).

    Parameters
    ----------
    data
        An AnnData from ``read_bams`` (its ``var['bam']`` files; results also go to ``var``
        columns ``chipvi_fragment_length``, ``chipvi_nsc``, ``chipvi_rsc``) or BAM path(s)
        (coordinate-sorted; an index speeds up ``chroms``). A bins store's ``var['bam']``
        likewise (results in the open store's ``var`` and ``uns`` in memory, not on disk).
    chroms
        Chromosomes to use (default all in the header; one or two large ones suffice).
    max_shift
        Largest strand shift in bp.
    min_mapq
        Skip reads below this mapping quality; secondary, supplementary, QC-failed and (unless
        ``keep_duplicates``) duplicate reads are skipped; of read pairs only read 1 is used.
    keep_duplicates
        Count reads flagged as duplicates.
    exclude
        Shifts (inclusive range, bp) not considered for the fragment length; default ENCODE's
        ``(10, read length + 10)`` around the phantom peak. Shifts below the range's start are
        also skipped.
    key_added
        With an AnnData, store ``{'params': ..., 'metrics': DataFrame, 'curve': DataFrame}`` in
        ``adata.uns[key_added]`` and the ``var`` columns (``None``: store nothing).

    Returns
    -------
    pandas.DataFrame
        Per library (or BAM stem): ``read_length``, ``fragment_length``, ``cc_fragment``,
        ``cc_read_length``, ``cc_min``, ``nsc``, ``rsc``, ``quality_tag``, ``n_reads``.
    """
    if is_store(data):
        data = open_store(data)  # its var names the BAMs
    if isinstance(data, AnnData | BinStore):
        if "bam" not in data.var:
            raise ChipviInputError("adata.var has no 'bam' column; pass BAM paths instead.")
        bams = {str(k): Path(v) for k, v in data.var["bam"].items()}
        empty = [k for k, v in data.var["bam"].items() if not str(v)]
        if empty:
            raise ChipviInputError(f"Libraries {empty} have no BAM path in adata.var['bam'].")
    elif isinstance(data, (str, os.PathLike)):
        bams = {Path(data).stem: Path(data)}
    else:
        bams = {Path(p).stem: Path(p) for p in data}
    if int(max_shift) < 50:
        raise ChipviInputError(f"max_shift must be at least 50 bp, got {max_shift}.")
    max_shift = int(max_shift)
    rows, curves = {}, {"shift": np.arange(max_shift + 1)}
    for name, path in bams.items():
        ends, sizes, read_length = _five_prime_ends(path, chroms, min_mapq, keep_duplicates)
        cc = _cross_correlation(ends, sizes, max_shift)
        lo, hi = exclude if exclude is not None else (10, read_length + 10)
        candidate = np.arange(max_shift + 1) > hi
        if not candidate.any():
            raise ChipviInputError(
                f"max_shift={max_shift} leaves no shift beyond the excluded range ({lo}, {hi})."
            )
        fragment = int(np.flatnonzero(candidate)[np.argmax(cc[candidate])])
        cc_min = float(cc.min())
        cc_read = float(cc[min(read_length, max_shift)])
        nsc = float(cc[fragment] / cc_min) if cc_min > 0 else np.nan
        denom = cc_read - cc_min
        rsc = float((cc[fragment] - cc_min) / denom) if denom > 0 else np.nan
        rows[name] = {
            "read_length": read_length,
            "fragment_length": fragment,
            "cc_fragment": float(cc[fragment]),
            "cc_read_length": cc_read,
            "cc_min": cc_min,
            "nsc": nsc,
            "rsc": rsc,
            "quality_tag": _quality_tag(rsc),
            "n_reads": int(sum(p.size + m.size for p, m in ends.values())),
        }
        curves[name] = cc
    metrics = pd.DataFrame.from_dict(rows, orient="index")
    metrics.index.name = "library"
    if isinstance(data, AnnData | BinStore) and key_added is not None:
        for col in ("fragment_length", "nsc", "rsc"):
            data.var[f"chipvi_{col}"] = metrics[col].reindex(data.var_names).to_numpy()
        params = {"chroms": chroms, "max_shift": max_shift, "min_mapq": int(min_mapq),
                  "keep_duplicates": bool(keep_duplicates), "exclude": exclude}  # fmt: skip
        store(data, key_added, params, metrics=metrics, curve=pd.DataFrame(curves))
    return metrics
