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
from ..io import is_store, open_store, read_regions

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


def _memory_chromosomes(adata: AnnData, values: np.ndarray):
    """``(chrom, bin starts, values_at)`` per chromosome of an AnnData, bins in genomic order;
    ``values_at(index)`` gives the values of the chromosome's bins ``index`` (any shape)."""
    order = genomic_order(adata)
    chrom, start, _ = (a[order] for a in bin_coordinates(adata))
    values = values[order]
    for c in pd.unique(chrom):
        on = np.flatnonzero(chrom == c)
        yield c, start[on], lambda index, on=on: values[on[index]]


def _store_signal(store, table: pd.DataFrame, layer, key, columns):
    """``(columns, chromosomes, signal)`` of a bins store, as :func:`_memory_chromosomes`:
    a chromosome's bin starts, and of its values only the chunks that hold wanted bins."""
    from .._bins import select_columns
    from .._blocks import Blocks

    bins = Blocks(store)
    if key is not None:
        bins.check_layer(key, "obsm")
        available = [str(c) for c in store.obsm(key, 0, 0).columns]
        names = select_columns(available, columns, f"{store.path} obsm[{key!r}]")

        def read(a, b):
            return store.obsm(key, a, b)[names].to_numpy(np.float64)

        signal = describe(store, "obsm", key) or f"{store.path} obsm[{key!r}]"
    else:
        names = bins.select(columns, f"{store.path} " + ("X" if layer is None else layer))
        cols = [bins.var_names.index(c) for c in names]
        bins.check_layer(layer)
        depth = bins.depth(None)[cols]

        def read(a, b):  # counts per million as in memory (the same operations)
            values = bins.values(layer, a, b)[:, cols]
            return values / depth * 1e6 if layer is None else values

        signal = ("counts per million (X)" if layer is None else
                  describe(store, "layers", layer) or f"{store.path} layers[{layer!r}]")  # fmt: skip

    def chromosomes():
        for c, a, b in store.chrom_ranges():
            if c not in set(table["chrom"]):
                continue
            starts = store.obs(a, b, names=False)["start"].to_numpy(np.int64)
            yield c, starts, lambda index, a=a: _rows(read, store.chunk, a + index)

    return names, chromosomes(), signal


def _rows(read, chunk: int, index: np.ndarray) -> np.ndarray:
    """``read``'s values at rows ``index`` (any shape), reading only the chunks holding them."""
    wanted, inverse = np.unique(index.ravel(), return_inverse=True)
    out = None
    for c in np.unique(wanted // chunk):
        rows = wanted[(wanted // chunk) == c]
        block = read(int(rows[0]), int(rows[-1]) + 1)
        if out is None:
            out = np.empty((wanted.size, block.shape[1]))
        out[np.searchsorted(wanted, rows)] = block[rows - rows[0]]
    return out[inverse].reshape(*index.shape, out.shape[1])


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
        AnnData in the chipvi layout (obs ``chrom, start, end``), or a bins store
        (:func:`chipvi.io.open_store` or its path): a chromosome's bin coordinates at a time and
        only the chunks holding bins near the regions are read; the result goes to the open
        store's ``uns`` in memory only (not to disk), where :func:`chipvi.pl.profile` reads it.
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
    if is_store(adata):
        adata = open_store(adata)
        names, chromosomes, signal = _store_signal(adata, table, layer, key, columns)
        size = adata.bin_size
    else:
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
        names = [str(c) for c in frame.columns]
        chromosomes = _memory_chromosomes(adata, frame.to_numpy())
    n_up, n_down = upstream // size, downstream // size
    offsets = np.arange(-n_up, n_down + 1)

    matrix = np.full((len(table), len(names), offsets.size), np.nan)
    wanted = set(table["chrom"])
    for c, starts, values_at in chromosomes:
        if c not in wanted:
            continue
        rows = np.flatnonzero(table["chrom"].to_numpy() == c)
        centre = np.searchsorted(starts, points[rows], side="right") - 1  # bin holding the point
        minus = table["strand"].to_numpy()[rows] == "-"
        steps = np.where(minus[:, None], -offsets[None, :], offsets[None, :])
        idx = centre[:, None] + steps
        inside = (idx >= 0) & (idx < starts.size)
        safe = np.clip(idx, 0, starts.size - 1)
        # A bin counts only if it lies exactly where the offset says (gaps in the bins: NaN).
        want = starts[np.clip(centre, 0, starts.size - 1)][:, None] + steps * size
        inside &= (centre[:, None] >= 0) & (starts[safe] == want)
        got = values_at(safe)  # regions × positions × columns
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
        "columns": names,
        "regions": table,
        "signal": signal,
    }
    return store(adata, key_added, params, **result)
