"""Shared checks and in-place helpers for the preprocessing functions."""

from __future__ import annotations

import anndata as ad
import numpy as np

from .._errors import ChipviInputError


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
