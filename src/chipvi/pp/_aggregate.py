"""Aggregate fixed-width bins into wider ones."""

from __future__ import annotations

import copy as copy_module
import os
import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .._bins import bin_obs, chrom_codes, tiled_windows, windows_obs
from .._errors import ChipviInputError
from .._utils import check_int
from ._anndata import chipvi_uns, map_store, replace_contents, source_store

# (count layer, mean-MAPQ layer) pairs; None is X.
_COUNT_PAIRS = ((None, "mapq"), ("control", "control_mapq"))


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def aggregate_bins(
    adata: ad.AnnData | str | os.PathLike,
    bin_size: int,
    *,
    copy: bool = False,
    out: str | os.PathLike | None = None,
    chunk_size: int | None = None,
    overwrite: bool = False,
) -> ad.AnnData | None:
    """Merge adjacent bins into bins of ``bin_size`` bp (e.g. 25 bp -> 200 bp).

    Counts (``X`` and ``layers["control"]``) are summed; mean MAPQ layers (``"mapq"``,
    ``"control_mapq"``) are averaged weighted by the reads of the matching counts (0 where a
    new bin has no reads). New bins lie on the genome-wide grid of ``bin_size`` bins from 0;
    the last bin of a chromosome ends at the chromosome end, so it is shorter when the length
    is not a multiple of ``bin_size``. Data cropped to a region (``read_bams(region=...)``,
    :func:`filter_region`, :func:`filter_chroms`) is aggregated over the region: a new bin
    that the region cuts is cut the same way (it holds the bins that were there). ``obs`` is rebuilt, ``var`` kept, ``uns["chipvi"]["bin_size"]`` updated
    (the previous size goes to ``"aggregated_from"``). Other layers, ``obsm`` and ``obsp`` have
    no defined aggregate and are dropped with a warning.

    Parameters
    ----------
    adata
        Bins x libraries from :func:`chipvi.read_bams`: per chromosome, a gap-free run of its
        bins in order (whole chromosomes or one region each; aggregate before
        :func:`filter_blacklist`, which leaves gaps). Or the path of a bins store
        (``read_bams(out=...)``), aggregated a block at a time into ``out``.
    bin_size
        New bin width in bp: a positive multiple of the current one.
    copy
        Return a new AnnData instead of replacing the contents of ``adata``.
    out
        For a store: the new ``.zarr`` store to write.
    chunk_size
        For a store: old bins read per block, a multiple of the aggregation factor
        (``bin_size`` / current bin size); default: the multiple nearest below the store's
        chunk size.
    overwrite
        For a store: replace an existing ``out``.

    Returns
    -------
    anndata.AnnData or None
        The aggregated AnnData if ``copy``, else ``None`` (``adata`` is updated).

    Examples
    --------
    >>> adata = chipvi.read_bams("samples.csv", bin_size=25)  # doctest: +SKIP
    >>> chipvi.pp.aggregate_bins(adata, 200)  # doctest: +SKIP
    >>> chipvi.pp.aggregate_bins("bins25.zarr", 200, out="bins200.zarr")  # doctest: +SKIP
    """
    store = source_store(adata, out, "aggregate_bins")
    if store is not None:
        _aggregate_store(store, bin_size, out, chunk_size, overwrite)
        return None
    info = chipvi_uns(adata, "aggregate_bins")
    current = int(info["bin_size"])
    bin_size = check_int("bin_size", bin_size, 1)
    if bin_size % current:
        raise ChipviInputError(
            f"bin_size {bin_size} is not a multiple of the current bin size {current}; "
            f"choose a multiple such as {current * max(1, round(bin_size / current))}."
        )
    sizes = {str(c): int(n) for c, n in info["chrom_sizes"].items()}
    obs = adata.obs
    windows = tiled_windows(obs, sizes, current)
    if windows is None:
        raise ChipviInputError(
            "aggregate_bins needs, per chromosome of uns['chipvi']['chrom_sizes'], a gap-free run "
            f"of its {current} bp bins in genomic order (as read_bams writes them, whole or over "
            "a region); bins were removed or reordered. Aggregate before filter_blacklist or "
            "subsetting bins."
        )
    if windows == [(c, 0, n) for c, n in sizes.items()]:
        new_obs = bin_obs(sizes.items(), bin_size)  # the whole genome: the fast table builder
    else:
        new_obs = windows_obs(windows, bin_size, sizes)
    # Old bins are in order and never straddle a new bin's edge, so each new bin is a run of
    # consecutive old bins: a new run starts where the chromosome or the new grid cell changes.
    chrom = chrom_codes(obs)[0]
    cell = obs["start"].to_numpy(np.int64) // bin_size
    run_starts = np.flatnonzero(np.r_[True, (chrom[1:] != chrom[:-1]) | (cell[1:] != cell[:-1])])
    assert len(run_starts) == len(new_obs)

    layers = {}
    x = None
    for count_key, mapq_key in _COUNT_PAIRS:
        if count_key is not None and count_key not in adata.layers:
            continue
        counts = _dense(adata.X if count_key is None else adata.layers[count_key])
        summed = np.add.reduceat(counts, run_starts, axis=0, dtype=np.int64)
        if summed.size and summed.max() > np.iinfo(np.int32).max:
            raise ChipviInputError(
                f"aggregated counts exceed the int32 range in {count_key or 'X'}; use a smaller "
                "bin_size."
            )
        if count_key is None:
            x = summed.astype(np.int32)
        else:
            layers[count_key] = summed.astype(np.int32)
        if mapq_key in adata.layers:
            weighted = np.add.reduceat(
                counts * _dense(adata.layers[mapq_key]).astype(np.float64), run_starts, axis=0
            )
            mean = np.divide(weighted, summed, out=np.zeros_like(weighted), where=summed > 0)
            layers[mapq_key] = mean.astype(np.float32)
    dropped = [k for k in adata.layers if k not in layers]
    dropped += [f"obsm['{k}']" for k in adata.obsm] + [f"obsp['{k}']" for k in adata.obsp]
    if dropped:
        warnings.warn(
            f"aggregate_bins dropped {', '.join(dropped)}: no defined aggregate; recompute them "
            "on the aggregated bins.",
            UserWarning,
            stacklevel=2,
        )
    uns = copy_module.deepcopy(dict(adata.uns))
    uns["chipvi"] = {**uns["chipvi"], "bin_size": bin_size, "aggregated_from": current}
    new = ad.AnnData(
        X=x,
        obs=new_obs,
        var=adata.var.copy(),
        layers=layers,
        uns=uns,
        varm={k: np.array(v, copy=True) for k, v in adata.varm.items()},
    )
    return replace_contents(adata, new, copy)


def _aggregate_store(store, bin_size, out, chunk_size: int | None, overwrite: bool) -> None:
    """:func:`aggregate_bins` of a store: blocks of whole new bins, one at a time."""
    bin_size = check_int("bin_size", bin_size, 1)
    factor = max(1, bin_size // store.bin_size)
    if chunk_size is None:
        chunk_size = factor * max(1, store.chunk // factor)
    elif check_int("chunk_size", chunk_size, 1) % factor:
        raise ChipviInputError(
            f"chunk_size {chunk_size} is not a multiple of the aggregation factor {factor} "
            f"({bin_size} / {store.bin_size} bp), so a block would cut a new bin; pass "
            f"chunk_size={factor * max(1, round(chunk_size / factor))}."
        )
    last = {}

    def block(bins: ad.AnnData) -> ad.AnnData:
        new = aggregate_bins(bins, bin_size, copy=True)
        last["uns"] = new.uns["chipvi"]
        return new

    # The old bins' names are not needed: the new bins get their own.
    map_store(
        store, out, block, lambda: last["uns"], size=chunk_size, names=False, overwrite=overwrite
    )
