"""Remove bins: blacklisted regions and unwanted chromosomes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._bins import blacklist_mask, blacklist_record, parse_region, region_mask
from .._errors import ChipviInputError
from ..io import read_bed
from ._anndata import chipvi_uns, subset_obs

#: Chromosomes dropped by default: mitochondrial genome and the EBV decoy of hg38 builds.
DEFAULT_DROP = ("chrM", "chrMT", "MT", "chrEBV")


def filter_blacklist(
    adata: ad.AnnData, bed: str | os.PathLike | pd.DataFrame, *, copy: bool = False
) -> ad.AnnData | None:
    """Remove bins that overlap any interval of a blacklist BED (e.g. ENCODE blacklist).

    A bin is removed when it shares at least one base with an interval. Intervals on
    chromosomes without bins are ignored. What was removed is recorded in
    ``uns["chipvi"]["filter_blacklist"]``: ``bed`` (path(s), ``;``-separated over repeated
    calls), ``n_intervals``, ``n_bins_removed``, ``bp_removed`` and ``bins_removed_by_chrom``.

    Parameters
    ----------
    adata
        Bins x libraries from :func:`chipvi.read_bams`.
    bed
        BED file (plain or gzipped) or a DataFrame with ``chrom``, ``start``, ``end``.
    copy
        Return a filtered copy instead of filtering ``adata`` in place.

    Returns
    -------
    anndata.AnnData or None
        The filtered AnnData if ``copy``, else ``None``.
    """
    chipvi_uns(adata, "filter_blacklist")
    if isinstance(bed, pd.DataFrame):
        missing = [c for c in ("chrom", "start", "end") if c not in bed.columns]
        if missing:
            raise ChipviInputError(f"blacklist DataFrame lacks columns {missing}.")
        intervals, source = bed, "<DataFrame>"
    elif isinstance(bed, str | os.PathLike):
        intervals, source = read_bed(bed), str(os.path.abspath(bed))
    else:
        raise ChipviInputError(
            f"bed must be a BED file path or a DataFrame with chrom, start, end; got "
            f"{type(bed).__name__}."
        )
    hit = blacklist_mask(adata.obs, intervals, source)
    info = blacklist_record(adata.uns["chipvi"], adata.obs.loc[hit], len(intervals), source)
    result = subset_obs(adata, ~hit, copy)
    target = result if copy else adata
    target.uns["chipvi"] = info
    return result


def filter_chroms(
    adata: ad.AnnData,
    keep: Sequence[str] | str | None = None,
    drop: Sequence[str] | str = DEFAULT_DROP,
    *,
    copy: bool = False,
) -> ad.AnnData | None:
    """Keep the bins of some chromosomes only.

    Parameters
    ----------
    adata
        Bins x libraries from :func:`chipvi.read_bams`.
    keep
        Chromosomes to keep (default: all). Every name must exist.
    drop
        Chromosomes to remove. Names of the default list (``chrM``, ``chrMT``, ``MT``,
        ``chrEBV``) are ignored when absent, and kept when listed in ``keep``; any other name
        must exist and may not also be in ``keep``.
    copy
        Return a filtered copy instead of filtering ``adata`` in place.

    Returns
    -------
    anndata.AnnData or None
        The filtered AnnData if ``copy``, else ``None``. ``obs["chrom"]`` keeps only the
        remaining chromosomes as categories (header order), ``uns["chipvi"]["chrom_sizes"]``
        lists them, and ``uns["chipvi"]["filter_chroms"]["removed"]`` names the others.
    """
    info = chipvi_uns(adata, "filter_chroms")
    sizes = {str(c): int(n) for c, n in info["chrom_sizes"].items()}
    keep = [keep] if isinstance(keep, str) else (None if keep is None else list(keep))
    drop = [drop] if isinstance(drop, str) else list(drop)
    available = ", ".join(list(sizes)[:12]) + (", ..." if len(sizes) > 12 else "")
    unknown = [c for c in keep or [] if c not in sizes]
    unknown += [c for c in drop if c not in sizes and c not in DEFAULT_DROP]
    if unknown:
        raise ChipviInputError(
            f"chromosomes {unknown} do not exist in this AnnData (chromosomes: {available})."
        )
    # Names of the default list that the caller keeps explicitly are kept.
    both = sorted(set(keep or []) & set(drop) - set(DEFAULT_DROP))
    if both:
        raise ChipviInputError(f"chromosomes {both} are in both keep and drop; choose one.")
    drop = [c for c in drop if c not in (keep or [])]
    kept = [c for c in sizes if (keep is None or c in keep) and c not in drop]
    if not kept:
        raise ChipviInputError("filter_chroms would remove every chromosome.")
    mask = adata.obs["chrom"].astype(str).isin(kept).to_numpy()
    result = subset_obs(adata, mask, copy)
    target = result if copy else adata
    target.obs["chrom"] = pd.Categorical(target.obs["chrom"].astype(str), categories=kept)
    info = dict(target.uns["chipvi"])
    removed = [c for c in sizes if c not in kept]
    previous = list(np.asarray(info.get("filter_chroms", {}).get("removed", []), dtype=str))
    info["chrom_sizes"] = {c: sizes[c] for c in kept}
    info["filter_chroms"] = {"removed": np.asarray(previous + removed, dtype=str)}
    target.uns["chipvi"] = info
    return result


def filter_region(adata: ad.AnnData, region: str, *, copy: bool = False) -> ad.AnnData | None:
    """Keep the bins that overlap one genomic region (like deepTools' ``--region``).

    Useful for data sequenced or aligned over a slice of a chromosome only (everything outside
    carries no reads in ChIP nor control, and is not evidence of absence).

    Parameters
    ----------
    adata
        Bins x libraries from :func:`chipvi.read_bams`.
    region
        ``"chrom:start-end"`` (0-based half-open, commas allowed) or a bare chromosome name.
    copy
        Return a filtered copy instead of filtering ``adata`` in place.

    Returns
    -------
    anndata.AnnData or None
        The filtered AnnData if ``copy``, else ``None``. The region is recorded in
        ``uns["chipvi"]["filter_region"]``; ``chrom_sizes`` keeps the full chromosome lengths
        (tracks written from the result still describe the real genome).
    """
    info = chipvi_uns(adata, "filter_region")
    sizes = {str(c): int(n) for c, n in info["chrom_sizes"].items()}
    chrom, start, end = parse_region(region, sizes)
    keep = region_mask(adata.obs, chrom, start, end)
    if not keep.any():
        raise ChipviInputError(f"region {region!r} overlaps no bins of this AnnData.")
    result = subset_obs(adata, keep, copy)
    target = result if copy else adata
    info = dict(target.uns["chipvi"])
    info["filter_region"] = f"{chrom}:{start}-{end}"
    target.uns["chipvi"] = info
    return result
