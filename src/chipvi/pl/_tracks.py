"""Genome-browser style stacked tracks with enriched regions drawn as boxes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._bins import bin_coordinates, chrom_sizes, parse_region, signal_frame
from .._errors import ChipviInputError
from .._posterior import POSTERIOR_KEY, posterior_location
from .._store import stored
from ..io import read_regions
from ._utils import finish

TrackSpec = str | pd.DataFrame


#: Keys holding natural-log fold enrichments (what ChIPVI's outputs are): drawn in ``log_base``.
def _is_log_enrichment(spec: str) -> bool:
    return spec.startswith("chipvi_") and "lfe" in spec


def _cpm(frame: pd.DataFrame, depth) -> pd.DataFrame:
    depth = np.asarray(depth, dtype=np.float64)
    return frame / np.where(depth > 0, depth, 1.0) * 1e6


def _resolve_track(
    adata: AnnData, name: str, spec: TrackSpec, log_base: str = "2"
) -> tuple[pd.DataFrame, str, str]:
    """(bins × columns values, level, unit) for a track: 'X'/'raw', a layer, an obsm key or a
    table. Counts are shown as counts per million, ChIPVI's log enrichments in ``log_base``."""
    if isinstance(spec, pd.DataFrame):
        level = "library" if set(spec.columns) <= set(adata.var_names) else "group"
        return spec.reindex(adata.obs_names).astype(np.float64), level, ""
    if spec in ("X", "raw"):
        frame = signal_frame(adata)
        if "depth" in adata.var:
            return _cpm(frame, adata.var["depth"]), "library", "CPM"
        return frame, "library", "reads"
    if spec in adata.layers or spec in adata.obsm:
        # a key that is both (chipvi denoise writes chipvi_lfe per library and per group)
        # shows the groups: the replicates' shared signal, one panel per group
        level = "group" if spec in adata.obsm else "library"
        frame = signal_frame(adata, **({"layer": spec} if level == "library" else {"key": spec}))
        if spec == "control" and "control_depth" in adata.var:
            return _cpm(frame, adata.var["control_depth"]), level, "CPM"
        if _is_log_enrichment(spec):
            if log_base == "2":
                return frame / np.log(2.0), level, "log2 FE"
            return frame, level, "ln FE"
        return frame, level, ""
    raise ChipviInputError(
        f"Track {name!r}: {spec!r} is not 'X', a layer ({sorted(adata.layers)}) or an obsm key "
        f"({sorted(adata.obsm)})."
    )


def tracks(
    adata: AnnData,
    region: str,
    *,
    keys: Sequence[TrackSpec] | Mapping[str, TrackSpec] | None = None,
    samples: Sequence[str] | str | None = None,
    regions: str | pd.DataFrame | os.PathLike | None = "chipvi_regions",
    height: float = 0.8,
    width: float = 10.0,
    log_base: str = "2",
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> list[Any]:
    """Stacked signal tracks over a genomic region, one panel per track and library/group.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout.
    region
        ``"chrom:start-end"`` (commas allowed, 0-based) or a bare chromosome name.
    keys
        Tracks to draw: ``"X"``/``"raw"`` (counts), layer names (library level, e.g.
        ``"control"`` or a denoised layer) and ``obsm`` keys (group level; a key in both is
        drawn per group); also bins × columns
        DataFrames (e.g. ``model.get_technical()["mu"]``). A mapping gives them display names
        (the unit, e.g. ``(CPM)``, is added unless the name already gives it).
        Default: raw counts and the control layer (as counts per million, CPM), and the
        group-level posterior log fold enrichment (``chipvi_group_lfe``) after
        ``model.add_posterior(adata)``.
    samples
        Libraries to show (group-level tracks show these libraries' groups). Default all.
    regions
        Regions drawn as boxes in a bottom panel, one row per group (or per comparison, for
        the ``"chipvi_differential"`` regions of :func:`chipvi.tl.differential_enrichment`):
        an ``uns`` key (default the one :func:`chipvi.tl.call_enriched_regions` writes;
        skipped silently if absent), a table or a BED path. ``None``: no region panel.
    height, width
        Inches per panel and figure width.
    log_base
        ``"2"`` (default, as deepTools) or ``"e"``: base of ChIPVI's log fold enrichments
        (``chipvi_*lfe*`` keys, stored in natural log); the y label says which.
    show, save, return_fig
        As in scanpy: ``save`` writes the figure to this path (format from the suffix,
        replacing an existing file); ``show=None`` shows it when nothing is saved and
        matplotlib is interactive (a notebook); ``return_fig`` returns the Figure.

    Returns
    -------
    list of matplotlib.axes.Axes
        Top to bottom; the region panel, if any, is last. ``None`` when shown; the Figure with
        ``return_fig``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter

    sizes = chrom_sizes(adata)
    chrom, lo, hi = parse_region(region, sizes)
    if log_base not in ("2", "e"):
        raise ChipviInputError(f"log_base must be '2' or 'e', got {log_base!r}.")
    if keys is None:
        keys = {"raw": "X"} | ({"control": "control"} if "control" in adata.layers else {})
        if POSTERIOR_KEY in adata.uns:
            keys["denoised"] = posterior_location(adata, "log_fold_enrichment", "group")[1]
    named = dict(keys) if isinstance(keys, Mapping) else {
        (k if isinstance(k, str) else f"track {i + 1}"): k for i, k in enumerate(keys)
    }  # fmt: skip
    libs = (
        list(adata.var_names)
        if samples is None
        else ([samples] if isinstance(samples, str) else list(samples))
    )
    unknown = [s for s in libs if s not in adata.var_names]
    if unknown:
        raise ChipviInputError(f"Unknown sample(s) {unknown}; libraries: {list(adata.var_names)}.")
    lib_groups = (
        list(pd.unique(adata.var.loc[libs, "group"].astype(str))) if "group" in adata.var else []
    )
    region_table = None
    if regions is not None:
        if isinstance(regions, str) and not os.path.exists(regions):
            if regions in adata.uns:  # a region-calling result; absent: no region panel
                region_table = stored(adata, regions, "regions", "call_enriched_regions")
        else:
            region_table = read_regions(regions)
    bchrom, bstart, bend = bin_coordinates(adata)
    inside = np.flatnonzero((bchrom == chrom) & (bend > lo) & (bstart < hi))
    inside = inside[np.argsort(bstart[inside], kind="stable")]
    panels = []
    for k, (name, spec) in enumerate(named.items()):
        frame, level, unit = _resolve_track(adata, name, spec, log_base)
        cols = (
            libs
            if level == "library"
            else [c for c in frame.columns if c in lib_groups] or list(frame.columns)
        )
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ChipviInputError(f"Track {name!r} has no column(s) {missing}.")
        # The unit follows the track's name unless the name already gives it (a user's label
        # such as "ChIP (CPM)").
        title = f"{name} ({unit})" if unit and unit.lower() not in name.lower() else name
        for col in cols:
            label = f"{title}\n{col}"
            panels.append((label, frame[col].to_numpy()[inside], f"C{k % 10}"))
    n_panels = len(panels) + (1 if region_table is not None else 0)
    fig, axes = plt.subplots(
        n_panels, 1, figsize=(width, height * n_panels + 0.6), sharex=True, squeeze=False
    )
    axes = list(axes[:, 0])
    edges = np.r_[bstart[inside], bend[inside][-1:]] if inside.size else np.array([lo, hi])
    for ax, (label, values, color) in zip(axes, panels, strict=False):
        if inside.size:
            ax.stairs(np.nan_to_num(values), edges, fill=True, alpha=0.8, linewidth=0, color=color)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        # Genome-browser style scale: the panel's range only (more ticks collide with the
        # neighbouring panels' labels).
        finite = values[np.isfinite(values)] if inside.size else np.zeros(1)
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        bottom = float(min(finite.min(), 0.0)) if finite.size else 0.0
        ax.set_ylim(bottom, top)
        ax.set_yticks([bottom, top] if bottom < 0 else [top], minor=False)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.3g}"))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if region_table is not None:
        ax = axes[-1]
        table = region_table
        if "group" in table and lib_groups:
            # Rows of groups (or libraries) not shown are dropped; rows labelled otherwise
            # (a differential comparison, "A_vs_B") belong to no one group and stay.
            label = table["group"].astype(str)
            known = set(adata.var["group"].astype(str)) | set(adata.var_names)
            table = table[~label.isin(known) | label.isin(lib_groups + libs)]
        rows = list(pd.unique(table["group"].astype(str))) if "group" in table else ["regions"]
        shown = table[
            (table["chrom"].astype(str) == chrom) & (table["end"] > lo) & (table["start"] < hi)
        ]
        for _, r in shown.iterrows():
            row = rows.index(str(r["group"])) if "group" in shown else 0
            ax.add_patch(
                Rectangle(
                    (r["start"], row + 0.1), r["end"] - r["start"], 0.8, color="tab:red", alpha=0.8
                )
            )
        ax.set_ylim(0, max(len(rows), 1))
        ax.set_yticks(np.arange(len(rows)) + 0.5, rows, fontsize=7)
        ax.set_ylabel("regions", rotation=0, ha="right", va="center", fontsize=8)
    axes[-1].set_xlim(lo, hi)
    axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:.3f}"))
    axes[-1].set_xlabel(f"{chrom} position (Mb), {chrom}:{lo:,}-{hi:,}", fontsize=8)
    fig.subplots_adjust(hspace=0.45)
    fig.align_ylabels(axes)
    return finish(fig, axes, show=show, save=save, return_fig=return_fig)
