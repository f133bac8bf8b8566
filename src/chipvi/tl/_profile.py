"""Signal around reference points of regions (deepTools ``computeMatrix reference-point``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._bins import bin_coordinates, genomic_order, signal_frame
from .._errors import ChipviInputError
from .._posterior import describe
from .._store import store
from ..io import read_regions

Reference = Literal["center", "tss", "tes"]


def _bin_size(adata: AnnData) -> int:
    size = adata.uns.get("chipvi", {}).get("bin_size")
    if size:
        return int(size)
    widths = (adata.obs["end"] - adata.obs["start"]).to_numpy()
    if widths.size == 0:
        raise ChipviInputError("adata has no bins.")
    return int(np.median(widths))


def _read(regions: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """Regions with ``chrom, start, end, strand, name`` from a table, BED-like file or GTF."""
    if not isinstance(regions, pd.DataFrame):
        name = str(regions).lower().removesuffix(".gz")
        if name.endswith((".gtf", ".gff", ".gff2")):
            from ._genes import _read_gene_intervals

            regions = _read_gene_intervals(regions, "gene_id").rename(columns={"gene": "name"})
    table = read_regions(regions)
    if len(table) == 0:
        raise ChipviInputError("No regions given: the table or file is empty.")
    out = pd.DataFrame(
        {
            "chrom": table["chrom"].astype(str).to_numpy(),
            "start": table["start"].astype(np.int64).to_numpy(),
            "end": table["end"].astype(np.int64).to_numpy(),
            "strand": table["strand"].astype(str).to_numpy() if "strand" in table else ".",
            "name": table["name"].astype(str).to_numpy()
            if "name" in table
            else [f"region_{i}" for i in range(len(table))],
        }
    )
    return out


def _reference_points(regions: pd.DataFrame, reference: str) -> np.ndarray:
    minus = regions["strand"].to_numpy() == "-"
    start, end = regions["start"].to_numpy(), regions["end"].to_numpy()
    if reference == "center":
        return (start + end) // 2
    if reference == "tss":
        return np.where(minus, end - 1, start)
    if reference == "tes":
        return np.where(minus, start, end - 1)
    raise ChipviInputError(f"reference must be 'center', 'tss' or 'tes', got {reference!r}.")


def profile(
    adata: AnnData,
    regions: pd.DataFrame | str | os.PathLike,
    *,
    reference: Reference = "center",
    upstream: int = 2000,
    downstream: int = 2000,
    layer: str | None = None,
    key: str | None = None,
    columns: Sequence[str] | None = None,
    key_added: str | None = "chipvi_profile",
) -> dict[str, Any]:
    """Matrix of signal around a reference point of each region (deepTools ``computeMatrix``).

    For each region, the bin holding its reference point and the bins ``upstream`` bp before
    and ``downstream`` bp after it, read along the region's strand (``-`` regions are flipped,
    so "upstream" is always 5′). Positions off a chromosome or without a bin are NaN.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout (obs ``chrom, start, end``).
    regions
        A table with ``chrom, start, end`` (optional ``strand``, ``name``), a BED /
        narrowPeak / broadPeak file, or a GTF (one region per gene, for ``reference="tss"``).
    reference
        ``"center"`` (region midpoint), ``"tss"`` (5′ end: ``start`` on ``+``, ``end - 1`` on
        ``-``) or ``"tes"`` (3′ end).
    upstream, downstream
        Window around the reference point in bp (rounded down to whole bins).
    layer, key
        Signal: library-level ``adata.layers[layer]``, or group-level ``adata.obsm[key]`` (e.g.
        ``"chipvi_group_lfe"`` after ``model.add_posterior(adata)`` or ``chipvi denoise``). Neither: ChIP counts per million
        (``X / var['depth'] * 1e6``).
    columns
        Libraries or groups to keep (default all).
    key_added
        Store the result in ``adata.uns[key_added]`` (``None``: only return it).

    Returns
    -------
    dict
        ``matrix`` (regions × columns × positions, float), ``positions`` (bin offsets from the
        reference point in bp), ``columns``, ``regions`` (the regions with their
        ``reference`` coordinate), ``signal`` (what the values are) and ``params``.
    """
    for name, value in (("upstream", upstream), ("downstream", downstream)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ChipviInputError(f"{name} must be an integer >= 0 (bp), got {value!r}.")
    table = _read(regions)
    points = _reference_points(table, reference)
    frame = signal_frame(adata, layer=layer, key=key, columns=columns)
    if layer is None and key is None:
        depth = (
            adata.var["depth"].to_numpy(dtype=np.float64)
            if "depth" in adata.var
            else frame.sum(0).to_numpy()
        )
        frame = frame / np.where(depth > 0, depth, 1.0) * 1e6
        signal = "counts per million (X)"
    else:
        slot, name = ("layers", layer) if layer is not None else ("obsm", key)
        signal = describe(adata, slot, name) or f"adata.{slot}[{name!r}]"
    size = _bin_size(adata)
    n_up, n_down = upstream // size, downstream // size
    offsets = np.arange(-n_up, n_down + 1)

    order = genomic_order(adata)
    chrom, start, _ = (a[order] for a in bin_coordinates(adata))
    values = frame.to_numpy()[order]
    matrix = np.full((len(table), values.shape[1], offsets.size), np.nan)
    for c in np.unique(table["chrom"]):
        rows = np.flatnonzero(table["chrom"].to_numpy() == c)
        on = np.flatnonzero(chrom == c)
        if on.size == 0:
            continue
        starts = start[on]
        centre = np.searchsorted(starts, points[rows], side="right") - 1  # bin holding the point
        minus = table["strand"].to_numpy()[rows] == "-"
        steps = np.where(minus[:, None], -offsets[None, :], offsets[None, :])
        idx = centre[:, None] + steps
        inside = (idx >= 0) & (idx < on.size)
        safe = np.clip(idx, 0, on.size - 1)
        # A bin counts only if it lies exactly where the offset says (gaps in the bins: NaN).
        want = starts[np.clip(centre, 0, on.size - 1)][:, None] + steps * size
        inside &= (centre[:, None] >= 0) & (starts[safe] == want)
        got = values[on[safe]]  # regions × positions × columns
        got[~inside] = np.nan
        matrix[rows] = np.transpose(got, (0, 2, 1))
    table["reference"] = points
    params = {
        "reference": reference, "upstream": int(upstream), "downstream": int(downstream),
        "bin_size": int(size), "layer": layer, "key": key,
    }  # fmt: skip
    result = {
        "matrix": matrix,
        "positions": offsets * size,
        "columns": [str(c) for c in frame.columns],
        "regions": table,
        "signal": signal,
    }
    return store(adata, key_added, params, **result)
