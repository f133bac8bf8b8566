"""Remove bins: blacklisted regions and unwanted chromosomes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._bins import blacklist_record, overlapping_bins, parse_region, region_mask
from .._errors import ChipviInputError
from ..io import read_bed
from ._anndata import chipvi_uns, map_store, source_store, subset_obs

#: Chromosomes dropped by default: mitochondrial genome and the EBV decoy of hg38 builds.
DEFAULT_DROP = ("chrM", "chrMT", "MT", "chrEBV")


def filter_blacklist(
    adata: ad.AnnData | str | os.PathLike,
    bed: str | os.PathLike | pd.DataFrame,
    *,
    copy: bool = False,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ad.AnnData | None:
    """Remove bins that overlap any interval of a blacklist BED (e.g. ENCODE blacklist).

    A bin is removed when it shares at least one base with an interval. Intervals on
    chromosomes without bins are ignored. What was removed is recorded in
    ``uns["chipvi"]["filter_blacklist"]``: ``bed`` (path(s), ``;``-separated over repeated
    calls), ``n_intervals``, ``n_bins_removed``, ``bp_removed`` and ``bins_removed_by_chrom``.

    Parameters
    ----------
    adata
        Bins x libraries from :func:`chipvi.read_bams`, or the path of a bins store
        (``read_bams(out=...)``), filtered a block at a time into ``out``.
    bed
        BED file (plain or gzipped) or a DataFrame with ``chrom``, ``start``, ``end``.
    copy
        Return a filtered copy instead of filtering ``adata`` in place.
    out
        For a store: the new ``.zarr`` store to write.
    overwrite
        For a store: replace an existing ``out``.

    Returns
    -------
    anndata.AnnData or None
        The filtered AnnData if ``copy``, else ``None``.
    """
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
    none = pd.DataFrame({"chrom": [], "start": [], "end": []})
    return _filter(
        adata,
        "filter_blacklist",
        keep=lambda obs: ~overlapping_bins(obs, intervals),
        # Removed bins are added up block by block; the source is recorded once, at the end.
        record=lambda info, removed: blacklist_record(info, removed, 0, ""),
        finish=lambda info: blacklist_record(info, none, len(intervals), source),
        empty=f"the blacklist {source} covers every bin; check that it matches the genome build.",
        copy=copy,
        out=out,
        overwrite=overwrite,
    )


def _filter(
    adata,
    function: str,
    *,
    keep: Callable[[pd.DataFrame], np.ndarray],
    record: Callable[[dict, pd.DataFrame], dict] | None = None,
    finish: Callable[[dict], dict],
    empty: str,
    obs: Callable[[pd.DataFrame], None] | None = None,
    copy: bool,
    out,
    overwrite: bool,
) -> ad.AnnData | None:
    """Keep the bins where ``keep(obs)``, in memory or a store block by block.

    ``record(info, removed)`` adds removed bins to ``uns["chipvi"]`` (per block for a store),
    ``finish(info)`` writes the rest of the record; ``obs(obs)`` fixes the kept ``obs`` in
    place (categories); ``empty`` is the error when no bin is left.
    """
    store = source_store(adata, out, function)
    if store is None:
        chipvi_uns(adata, function)
        mask = keep(adata.obs)
        if not mask.any():
            raise ChipviInputError(empty)
        info = adata.uns["chipvi"]
        if record is not None:
            info = record(info, adata.obs.loc[~mask])
        result = subset_obs(adata, mask, copy)
        target = result if copy else adata
        if obs is not None:
            obs(target.obs)
        target.uns["chipvi"] = finish(info)
        return result
    state = {"info": dict(store.uns["chipvi"]), "kept": 0}

    def block(bins: ad.AnnData) -> ad.AnnData:
        mask = keep(bins.obs)
        if record is not None:
            state["info"] = record(state["info"], bins.obs.loc[~mask])
        state["kept"] += int(mask.sum())
        kept = bins[mask].copy()
        # An AnnData subset drops unused categories; the store keeps one list for every block
        # (and drops the unused ones once written).
        categories = bins.obs["chrom"].cat.categories
        kept.obs["chrom"] = pd.Categorical(kept.obs["chrom"], categories=categories)
        if obs is not None:
            obs(kept.obs)
        return kept

    def uns() -> dict:
        if not state["kept"]:
            raise ChipviInputError(empty)
        return finish(state["info"])

    map_store(store, out, block, uns, overwrite=overwrite)
    return None


def filter_chroms(
    adata: ad.AnnData | str | os.PathLike,
    keep: Sequence[str] | str | None = None,
    drop: Sequence[str] | str = DEFAULT_DROP,
    *,
    copy: bool = False,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ad.AnnData | None:
    """Keep the bins of some chromosomes only.

    Parameters
    ----------
    adata
        Bins x libraries from :func:`chipvi.read_bams`, or the path of a bins store
        (``read_bams(out=...)``), filtered a block at a time into ``out``.
    keep
        Chromosomes to keep (default: all). Every name must exist.
    drop
        Chromosomes to remove. Names of the default list (``chrM``, ``chrMT``, ``MT``,
        ``chrEBV``) are ignored when absent, and kept when listed in ``keep``; any other name
        must exist and may not also be in ``keep``.
    copy
        Return a filtered copy instead of filtering ``adata`` in place.
    out
        For a store: the new ``.zarr`` store to write.
    overwrite
        For a store: replace an existing ``out``.

    Returns
    -------
    anndata.AnnData or None
        The filtered AnnData if ``copy``, else ``None``. ``obs["chrom"]`` keeps only the
        remaining chromosomes as categories (header order), ``uns["chipvi"]["chrom_sizes"]``
        lists them, and ``uns["chipvi"]["filter_chroms"]["removed"]`` names the others.
    """
    info = _uns(adata, out, "filter_chroms")
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
    removed = [c for c in sizes if c not in kept]

    def finish(info: dict) -> dict:
        info = dict(info)
        previous = list(np.asarray(info.get("filter_chroms", {}).get("removed", []), dtype=str))
        info["chrom_sizes"] = {c: sizes[c] for c in kept}
        info["filter_chroms"] = {"removed": np.asarray(previous + removed, dtype=str)}
        return info

    def categories(obs: pd.DataFrame) -> None:
        obs["chrom"] = pd.Categorical(obs["chrom"].astype(str), categories=kept)

    return _filter(
        adata,
        "filter_chroms",
        keep=lambda obs: obs["chrom"].astype(str).isin(kept).to_numpy(),
        finish=finish,
        empty=f"filter_chroms: no bins lie on {kept}.",
        obs=categories,
        copy=copy,
        out=out,
        overwrite=overwrite,
    )


def filter_region(
    adata: ad.AnnData | str | os.PathLike,
    region: str,
    *,
    copy: bool = False,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ad.AnnData | None:
    """Keep the bins that overlap one genomic region (like deepTools' ``--region``).

    Useful for data sequenced or aligned over a slice of a chromosome only (everything outside
    carries no reads in ChIP nor control, and is not evidence of absence).

    Parameters
    ----------
    adata
        Bins x libraries from :func:`chipvi.read_bams`, or the path of a bins store
        (``read_bams(out=...)``), filtered a block at a time into ``out``.
    region
        ``"chrom:start-end"`` (0-based half-open, commas allowed) or a bare chromosome name.
    copy
        Return a filtered copy instead of filtering ``adata`` in place.
    out
        For a store: the new ``.zarr`` store to write.
    overwrite
        For a store: replace an existing ``out``.

    Returns
    -------
    anndata.AnnData or None
        The filtered AnnData if ``copy``, else ``None``. The region is recorded in
        ``uns["chipvi"]["filter_region"]``; ``chrom_sizes`` keeps the full chromosome lengths
        (tracks written from the result still describe the real genome).
    """
    info = _uns(adata, out, "filter_region")
    sizes = {str(c): int(n) for c, n in info["chrom_sizes"].items()}
    chrom, start, end = parse_region(region, sizes)
    return _filter(
        adata,
        "filter_region",
        keep=lambda obs: region_mask(obs, chrom, start, end),
        finish=lambda info: {**info, "filter_region": f"{chrom}:{start}-{end}"},
        empty=f"region {region!r} overlaps no bins of this AnnData.",
        copy=copy,
        out=out,
        overwrite=overwrite,
    )


def _uns(adata, out, function: str) -> dict:
    """``uns["chipvi"]`` of an AnnData or a store (checked)."""
    store = source_store(adata, out, function)
    return dict(store.uns["chipvi"]) if store is not None else chipvi_uns(adata, function)
