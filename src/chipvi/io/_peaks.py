"""Write enriched or differential regions as BED, ENCODE narrowPeak or broadPeak.

The regions table is the one :func:`chipvi.tl.call_enriched_regions` stores in ``adata.uns``:
columns ``chrom, start, end, name, group, score, signal, pvalue, qvalue, summit`` where
``pvalue``/``qvalue`` are already -log10 (NaN when unknown) and ``summit`` is the summit's
0-based offset from ``start``.

Formats (UCSC/ENCODE definitions):

* BED6: ``chrom chromStart chromEnd name score strand``.
* narrowPeak (BED6+4): ``... signalValue pValue qValue peak``; ``pValue``/``qValue`` are -log10,
  -1 when not available; ``peak`` is the summit offset from ``chromStart`` (-1 if none).
* broadPeak (BED6+3): narrowPeak without ``peak``.

``score`` is an integer in 0–1000 (browser shading); ``strand`` is ``.``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import ChipviInputError
from .._store import stored
from .._utils import atomic_path
from ._bed import read_bed

PeakFormat = Literal["bed", "narrowPeak", "broadPeak"]
_SUFFIX_FORMAT = {".bed": "bed", ".narrowpeak": "narrowPeak", ".broadpeak": "broadPeak"}
_FORMAT_SUFFIX = {"bed": ".bed", "narrowPeak": ".narrowPeak", "broadPeak": ".broadPeak"}
REGION_COLUMNS = ("chrom", "start", "end", "name", "score")


def _regions_table(regions: pd.DataFrame | AnnData, key: str) -> pd.DataFrame:
    if isinstance(regions, AnnData):
        if key not in regions.uns:
            raise ChipviInputError(
                f"adata.uns has no regions under {key!r}; run chipvi.tl.call_enriched_regions "
                f"first (available keys: {sorted(regions.uns.keys())})."
            )
        regions = stored(regions, key, "regions", "call_enriched_regions")
    if not isinstance(regions, pd.DataFrame):
        raise ChipviInputError(f"Regions must be a pandas DataFrame, got {type(regions).__name__}.")
    missing = [c for c in REGION_COLUMNS if c not in regions.columns]
    if missing:
        raise ChipviInputError(f"Regions table lacks column(s) {missing}.")
    return regions


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name) if t]


def _format_rows(table: pd.DataFrame, fmt: str, chrom_order: Sequence[str] | None) -> pd.DataFrame:
    if chrom_order is None:
        # No genome order known: natural sort (chr2 before chr10).
        chrom_order = sorted(pd.unique(table["chrom"].astype(str)), key=_natural_key)
    order = list(chrom_order)
    rank = table["chrom"].astype(str).map({c: i for i, c in enumerate(order)})
    table = table.assign(_rank=rank.fillna(len(order)).to_numpy()).sort_values(
        ["_rank", "start", "end"], kind="stable"
    )
    score = np.clip(np.nan_to_num(table["score"].to_numpy(dtype=float)), 0, 1000).round()
    out = pd.DataFrame(
        {
            "chrom": table["chrom"].astype(str).to_numpy(),
            "start": table["start"].to_numpy(dtype=np.int64),
            "end": table["end"].to_numpy(dtype=np.int64),
            "name": table["name"].astype(str).to_numpy(),
            "score": score.astype(np.int64),
            "strand": ".",
        }
    )
    if fmt == "bed":
        return out

    def column(name: str) -> np.ndarray:
        if name not in table:
            return np.full(len(table), -1.0)
        v = table[name].to_numpy(dtype=float)
        return np.where(np.isfinite(v), v, -1.0)

    out["signalValue"] = column("signal")
    out["pValue"] = column("pvalue")
    out["qValue"] = column("qvalue")
    if fmt == "narrowPeak":
        out["peak"] = column("summit").astype(np.int64)
    return out


def write_peaks(
    regions: pd.DataFrame | AnnData,
    path: str | os.PathLike,
    *,
    format: PeakFormat | None = None,
    key: str = "chipvi_regions",
    groups: Sequence[str] | str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write regions as BED6, ENCODE narrowPeak (BED6+4) or broadPeak (BED6+3).

    Parameters
    ----------
    regions
        Regions table (as stored by :func:`chipvi.tl.call_enriched_regions`), or an AnnData
        holding it in ``uns[key]``.
    path
        Output file (all selected regions in one file, format from the suffix ``.bed``,
        ``.narrowPeak``, ``.broadPeak``), or a folder: one file per group
        ``<group><suffix>``.
    format
        ``"bed"``, ``"narrowPeak"`` or ``"broadPeak"``; required when ``path`` is a folder or has
        another suffix.
    key
        ``uns`` key of the regions when ``regions`` is an AnnData.
    groups
        Keep only these groups (values of the ``group`` column).
    overwrite
        Replace existing files (otherwise refused before anything is written).

    Returns
    -------
    dict
        Group (or ``"all"`` for a single file) → written path.
    """
    chrom_order = None
    if isinstance(regions, AnnData):
        chrom_order = list(regions.uns.get("chipvi", {}).get("chrom_sizes", {}) or []) or None
    table = _regions_table(regions, key)
    path = Path(path)
    suffix_fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if format is None:
        if suffix_fmt is None:
            raise ChipviInputError(
                f"Cannot tell the peak format from {path}; pass format='bed', 'narrowPeak' or "
                "'broadPeak'."
            )
        format = suffix_fmt  # noqa: A001
    if format not in _FORMAT_SUFFIX:
        raise ChipviInputError(
            f"format must be 'bed', 'narrowPeak' or 'broadPeak', not {format!r}."
        )
    if groups is not None:
        wanted = [groups] if isinstance(groups, str) else list(groups)
        have = set(table["group"].astype(str)) if "group" in table else set()
        unknown = [g for g in wanted if g not in have]
        if unknown:
            raise ChipviInputError(
                f"No regions for group(s) {unknown}; groups present: {sorted(have)}."
            )
        table = table[table["group"].astype(str).isin(wanted)]
    if suffix_fmt is not None or (path.exists() and path.is_file()):
        targets = {"all": (path, table)}
    else:
        if "group" not in table:
            raise ChipviInputError("Writing one file per group needs a 'group' column.")
        if path.exists() and not path.is_dir():
            raise ChipviInputError(f"{path} exists and is not a folder.")
        names = [str(g) for g in pd.unique(table["group"].astype(str))]
        targets = {
            g: (path / f"{g}{_FORMAT_SUFFIX[format]}", table[table["group"].astype(str) == g])
            for g in names
        }
    existing = [str(p) for p, _ in targets.values() if p.exists()]
    if existing and not overwrite:
        raise ChipviInputError(f"{existing[0]} already exists; pass overwrite=True to replace it.")
    rows = {g: _format_rows(t, format, chrom_order) for g, (_, t) in targets.items()}
    written = {}
    for g, (p, _) in targets.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p, overwrite=overwrite) as tmp:
            rows[g].to_csv(tmp, sep="\t", header=False, index=False, float_format="%.5g")
        written[g] = p
    return written


def read_regions(regions: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """Regions as a DataFrame with at least ``chrom, start, end`` from a table or a BED file.

    BED-like files (BED, narrowPeak, broadPeak, plain or gzipped) are read with
    :func:`chipvi.io.read_bed`.
    """
    if isinstance(regions, pd.DataFrame):
        missing = [c for c in ("chrom", "start", "end") if c not in regions.columns]
        if missing:
            raise ChipviInputError(f"Regions table lacks column(s) {missing}.")
        return regions
    return read_bed(regions)
