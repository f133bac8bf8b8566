"""Profiles and heatmaps of signal around regions (deepTools ``plotProfile`` / ``plotHeatmap``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData

from .._errors import ChipviInputError
from ._utils import finish


def _stored(adata: AnnData, key: str, columns: Sequence[str] | None):
    if key not in adata.uns or "matrix" not in adata.uns[key]:
        raise ChipviInputError(
            f"adata.uns has no profile {key!r}; compute one with chipvi.tl.profile(adata, "
            f"regions, key_added={key!r})."
        )
    result = adata.uns[key]
    names = [str(c) for c in result["columns"]]
    wanted = names if columns is None else list(columns)
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ChipviInputError(f"Profile {key!r} has no column(s) {unknown}; it has {names}.")
    picks = [names.index(c) for c in wanted]
    matrix = np.asarray(result["matrix"], dtype=np.float64)[:, picks, :]
    return result, wanted, matrix


def _axis_label(result) -> str:
    ref = {"center": "centre", "tss": "TSS", "tes": "TES"}.get(result["params"]["reference"], "")
    return f"distance from region {ref} (kb)"


def _kb(positions) -> np.ndarray:
    return np.asarray(positions, dtype=np.float64) / 1e3


def profile(
    adata: AnnData,
    *,
    key: str = "chipvi_profile",
    columns: Sequence[str] | None = None,
    ax: Any = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Any:
    """Mean signal around the regions' reference point, one line per library or group.

    Reads :func:`chipvi.tl.profile`'s result in ``uns[key]``; the band is ± one standard error
    of the mean over regions (NaN positions left out).

    Returns
    -------
    matplotlib.axes.Axes
        ``None`` when shown, the Figure with ``return_fig`` (see :func:`chipvi.pl.tracks`).
    """
    import matplotlib.pyplot as plt

    result, names, matrix = _stored(adata, key, columns)
    x = _kb(result["positions"])
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
    fig = ax.figure
    for j, name in enumerate(names):
        values = matrix[:, j, :]
        n = np.sum(np.isfinite(values), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nanmean(np.where(n > 0, values, 0.0), axis=0)
            sem = np.nanstd(values, axis=0) / np.sqrt(np.maximum(n, 1))
        (line,) = ax.plot(x, mean, label=name)
        ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.2, lw=0)
    ax.axvline(0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel(_axis_label(result))
    ax.set_ylabel(f"mean {result['signal']}")
    ax.legend(fontsize=7, frameon=False)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig, own_figure=own_figure)


def heatmap(
    adata: AnnData,
    *,
    key: str = "chipvi_profile",
    columns: Sequence[str] | None = None,
    sort: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Any:
    """One heatmap panel per library or group: regions (rows) × positions, with the mean
    profile above it (deepTools ``plotHeatmap``).

    Parameters
    ----------
    key
        ``uns`` key of a :func:`chipvi.tl.profile` result.
    columns
        Libraries or groups to show (default all).
    sort
        Order regions by their mean signal over all panels, highest first (else input order).
    vmin, vmax
        Colour range (default the 2nd and 98th percentiles of all values shown).
    cmap
        Matplotlib colour map.

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes
        Mean-profile row above the heatmap row, colour bar last (see :func:`chipvi.pl.tracks`
        for ``show`` / ``return_fig``).
    """
    import matplotlib.pyplot as plt

    result, names, matrix = _stored(adata, key, columns)
    if sort:
        with np.errstate(invalid="ignore"):
            score = np.nan_to_num(np.nanmean(matrix, axis=(1, 2)), nan=-np.inf)
        matrix = matrix[np.argsort(-score, kind="stable")]
    finite = matrix[np.isfinite(matrix)]
    lo = vmin if vmin is not None else (np.percentile(finite, 2) if finite.size else 0.0)
    hi = vmax if vmax is not None else (np.percentile(finite, 98) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    x = _kb(result["positions"])
    half = (x[1] - x[0]) / 2 if x.size > 1 else 0.5
    n = len(names)
    fig, axes = plt.subplots(
        2, n + 1, figsize=(2.6 * n + 0.6, 6.5), squeeze=False,
        gridspec_kw={"height_ratios": [1, 4], "width_ratios": [1] * n + [0.08]},
    )  # fmt: skip
    axes[0, n].axis("off")
    image = None
    for j, name in enumerate(names):
        values = matrix[:, j, :]
        with np.errstate(invalid="ignore"):
            axes[0, j].plot(x, np.nanmean(values, axis=0), color="C0")
        axes[0, j].set_title(name, fontsize=9)
        axes[0, j].set_xlim(x[0] - half, x[-1] + half)
        axes[0, j].tick_params(labelbottom=False, labelsize=7)
        image = axes[1, j].imshow(
            values, aspect="auto", interpolation="nearest", cmap=cmap, vmin=lo, vmax=hi,
            extent=(x[0] - half, x[-1] + half, values.shape[0], 0),
        )  # fmt: skip
        axes[1, j].set_xlabel(_axis_label(result), fontsize=8)
        axes[1, j].tick_params(labelsize=7)
        axes[1, j].set_yticks([])  # rows are regions, not a scale
    axes[0, 0].set_ylabel("mean", fontsize=8)
    order = "sorted by mean signal" if sort else "in input order"
    axes[1, 0].set_ylabel(f"{matrix.shape[0]} regions, {order}", fontsize=8)
    bar = fig.colorbar(image, cax=axes[1, n])
    bar.set_label(result["signal"], fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    return finish(fig, axes, show=show, save=save, return_fig=return_fig)
