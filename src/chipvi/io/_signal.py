"""Resolve a per-bin signal (X, a layer or an obsm table) and the genomic order of the bins.

Shared by the track writers, region calling, QC and plots, so that every function names its
input the same way: ``layer`` for library-level values (``adata.layers``; ``None`` means ``X``)
and ``key`` for group-level values (``adata.obsm[key]``, a DataFrame whose columns are groups).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import ChipviInputError


def signal_frame(
    adata: AnnData,
    *,
    layer: str | None = None,
    key: str | None = None,
    columns: Sequence[str] | str | None = None,
) -> pd.DataFrame:
    """Return a bins × columns DataFrame of float values from ``X``, a layer or an obsm table.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout (obs = bins).
    layer
        Library-level values in ``adata.layers[layer]``; ``None`` (and no ``key``) means ``X``.
    key
        Group-level values in ``adata.obsm[key]`` (DataFrame with group columns, or an array
        whose columns are taken as ``var_names``). Exclusive with ``layer``.
    columns
        Subset of libraries (``var_names``) or groups (obsm columns) to keep, in this order.
    """
    if layer is not None and key is not None:
        raise ChipviInputError(
            "Pass either layer= (library level) or key= (group level), not both."
        )
    if key is not None:
        if key not in adata.obsm:
            raise ChipviInputError(
                f"adata.obsm has no key {key!r}; available: {sorted(adata.obsm.keys())}."
            )
        value = adata.obsm[key]
        if isinstance(value, pd.DataFrame):
            frame = value.astype(np.float64)
            frame.index = adata.obs_names
        else:
            arr = np.asarray(value, dtype=np.float64)
            names = (
                list(adata.var_names) if arr.shape[1] == adata.n_vars else list(range(arr.shape[1]))
            )
            frame = pd.DataFrame(arr, index=adata.obs_names, columns=[str(n) for n in names])
        where = f"adata.obsm[{key!r}]"
    else:
        if layer is None:
            matrix = adata.X
            where = "adata.X"
        else:
            if layer not in adata.layers:
                raise ChipviInputError(
                    f"adata.layers has no layer {layer!r}; available: {sorted(adata.layers.keys())}."
                )
            matrix = adata.layers[layer]
            where = f"adata.layers[{layer!r}]"
        if hasattr(matrix, "toarray"):
            matrix = matrix.toarray()
        frame = pd.DataFrame(
            np.asarray(matrix, dtype=np.float64), index=adata.obs_names, columns=adata.var_names
        )
    if columns is not None:
        wanted = [columns] if isinstance(columns, str) else list(columns)
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ChipviInputError(
                f"{where} has no column(s) {missing}; available: {list(frame.columns)}."
            )
        frame = frame[wanted]
    return frame


def chrom_sizes(adata: AnnData) -> dict[str, int]:
    """Chromosome sizes recorded by ``read_bams`` (``uns['chipvi']['chrom_sizes']``)."""
    sizes = adata.uns.get("chipvi", {}).get("chrom_sizes")
    if not sizes:
        raise ChipviInputError(
            "adata.uns['chipvi']['chrom_sizes'] is missing; build the AnnData with "
            "chipvi.read_bams or set it to {chrom: length}."
        )
    return {str(c): int(n) for c, n in dict(sizes).items()}


def bin_coordinates(adata: AnnData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(chrom, start, end)`` arrays of the bins (chrom as str objects)."""
    for col in ("chrom", "start", "end"):
        if col not in adata.obs:
            raise ChipviInputError(
                f"adata.obs has no column {col!r}; bins need chrom, start and end columns."
            )
    chrom = adata.obs["chrom"].astype(str).to_numpy()
    start = adata.obs["start"].to_numpy(dtype=np.int64)
    end = adata.obs["end"].to_numpy(dtype=np.int64)
    return chrom, start, end


def genomic_order(adata: AnnData, sizes: dict[str, int] | None = None) -> np.ndarray:
    """Indices that sort the bins by chromosome (header order) then start.

    Also checks that bins lie on known chromosomes, inside them, and do not overlap, so that
    writers can emit sorted, non-overlapping entries as bigWig/BED require.
    """
    sizes = chrom_sizes(adata) if sizes is None else sizes
    chrom, start, end = bin_coordinates(adata)
    rank_of = {c: i for i, c in enumerate(sizes)}
    unknown = sorted(set(np.unique(chrom)) - set(rank_of))
    if unknown:
        raise ChipviInputError(
            f"Bins on chromosome(s) {unknown[:5]} that are not in uns['chipvi']['chrom_sizes']."
        )
    rank = np.array([rank_of[c] for c in chrom], dtype=np.int64) if len(chrom) else np.zeros(0, int)
    order = np.lexsort((start, rank))
    c, s, e = chrom[order], start[order], end[order]
    lengths = np.array([sizes[x] for x in c], dtype=np.int64) if len(c) else np.zeros(0, int)
    bad = (s < 0) | (e <= s) | (e > lengths)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ChipviInputError(
            f"Bin {c[i]}:{s[i]}-{e[i]} is empty or lies outside its chromosome "
            f"(length {lengths[i]})."
        )
    same = c[1:] == c[:-1]
    overlap = same & (s[1:] < e[:-1])
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        raise ChipviInputError(
            f"Bins {c[i]}:{s[i]}-{e[i]} and {c[i + 1]}:{s[i + 1]}-{e[i + 1]} overlap; "
            "tracks need non-overlapping bins."
        )
    return order


def interval_bin_ranges(
    adata: AnnData, chrom: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each interval, the bins of ``adata`` it overlaps, as a range in genomic order.

    Returns ``(order, first, last)``: ``order`` sorts the bins into genomic order (see
    :func:`genomic_order`) and interval k overlaps the sorted bins ``first[k]:last[k]``
    (empty when ``first == last``, e.g. on a chromosome without bins). Fixed-width bins make
    this a pair of ``searchsorted`` calls per chromosome, so no interval library is needed.
    """
    order = genomic_order(adata)
    bchrom, bstart, bend = (a[order] for a in bin_coordinates(adata))
    chrom = np.asarray(chrom).astype(str)
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    first = np.zeros(len(chrom), dtype=np.int64)
    last = np.zeros(len(chrom), dtype=np.int64)
    for c in np.unique(chrom):
        rows = np.flatnonzero(chrom == c)
        on = np.flatnonzero(bchrom == c)
        if on.size == 0:
            continue
        lo, hi = on[0], on[-1] + 1
        # Bin b overlaps [s, e) when bend[b] > s and bstart[b] < e.
        first[rows] = lo + np.searchsorted(bend[lo:hi], start[rows], side="right")
        last[rows] = lo + np.searchsorted(bstart[lo:hi], end[rows], side="left")
    last = np.maximum(last, first)
    return order, first, last


def overlap_mask(adata: AnnData, chrom, start, end) -> np.ndarray:
    """Boolean per bin (in ``adata`` order): does the bin overlap any of the intervals?"""
    from ._bed import overlapping_bins

    intervals = pd.DataFrame(
        {
            "chrom": np.asarray(chrom).astype(str),
            "start": np.asarray(start, dtype=np.int64),
            "end": np.asarray(end, dtype=np.int64),
        }
    )
    return overlapping_bins(adata.obs, intervals)
