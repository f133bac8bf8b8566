"""Shared checks and in-place helpers for the preprocessing functions."""

from __future__ import annotations

import os
from collections.abc import Callable

import anndata as ad
import numpy as np

from .._errors import ChipviInputError
from ..io import BinStore, is_store, open_store, store_writer


def chipvi_uns(adata: ad.AnnData, function: str) -> dict:
    """``adata.uns["chipvi"]``, or a clear error if the AnnData was not made by chipvi."""
    info = adata.uns.get("chipvi")
    if not isinstance(info, dict) or "bin_size" not in info or "chrom_sizes" not in info:
        raise ChipviInputError(
            f"{function} needs adata.uns['chipvi'] with 'bin_size' and 'chrom_sizes', as written "
            "by chipvi.read_bams; this AnnData has none."
        )
    for column in ("chrom", "start", "end"):
        if column not in adata.obs:
            raise ChipviInputError(
                f"{function} needs obs columns chrom, start, end (bins); '{column}' is missing."
            )
    return info


def subset_obs(adata: ad.AnnData, keep: np.ndarray, copy: bool) -> ad.AnnData | None:
    """Keep the bins where ``keep`` is True: a new object (``copy``) or in place, like scanpy."""
    if copy:
        return adata[keep].copy()
    adata._inplace_subset_obs(keep)
    return None


def replace_contents(adata: ad.AnnData, new: ad.AnnData, copy: bool) -> ad.AnnData | None:
    """Return ``new`` (``copy``) or make ``adata`` become ``new`` in place.

    An AnnData cannot change its number of observations through its public API;
    ``_init_as_actual`` is what anndata's own in-place subsetting uses (and scanpy relies on).
    """
    if copy:
        return new
    adata._init_as_actual(new)
    return None


def source_store(adata, out, function: str) -> BinStore | None:
    """The bins store a function reads (``adata`` a ``.zarr`` path or a
    :class:`~chipvi.io.BinStore`), or None for an AnnData.

    A store is never changed in place: ``out=`` names the new one.
    """
    if not is_store(adata):
        if out is not None:
            raise ChipviInputError(
                f"{function}(out=...) is for bins stores (.zarr); pass an in-memory AnnData "
                "without out=, or the store's path."
            )
        return None
    if out is None:
        raise ChipviInputError(
            f"{function} on the store {getattr(adata, 'path', adata)} needs out= (a new .zarr "
            "store): stores are not changed in place."
        )
    return open_store(adata)


def map_store(
    source: BinStore,
    out: str | os.PathLike,
    block: Callable[[ad.AnnData], ad.AnnData],
    uns: Callable[[], dict],
    *,
    size: int | None = None,
    names: bool = True,
    overwrite: bool = False,
) -> None:
    """Write ``block(bins)`` of each block of ``source`` to a new store at ``out``.

    Blocks are :meth:`~chipvi.io.BinStore.block_ranges` of ``size`` bins, read and written
    one at a time (``names=False``: without their names, for a ``block`` that makes new
    bins); ``uns()`` gives the new store's ``uns["chipvi"]`` once every block is written. The
    new store keeps ``source``'s ``var`` and chunk size.
    """
    with store_writer(out, chunk=source.chunk, overwrite=overwrite) as writer:
        for start, stop in source.block_ranges(size):
            new = block(source.block(start, stop, names=names))
            layers = {k: np.asarray(v) for k, v in new.layers.items()}
            writer.append(new.obs, np.asarray(new.X), layers)
        writer.finish(source.var, {"chipvi": uns()})
