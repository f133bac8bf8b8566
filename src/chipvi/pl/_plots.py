"""QC and model plots: replicate concordance, fingerprint, training history, technical fit, MA."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._bins import library_signal, log_cpm, signal_frame
from .._blocks import Blocks, Moments
from .._errors import ChipviInputError
from .._posterior import POSTERIOR_KEY, posterior_frame
from .._store import stored
from ..io import is_store, open_store
from ..tl import fingerprint as _fingerprint
from ._utils import finish


def _axes(ax, n: int, size=(4.0, 3.6)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, n, figsize=(size[0] * n, size[1]), squeeze=False)
        return fig, list(axes[0])
    axes = list(np.atleast_1d(ax))
    if len(axes) != n:
        raise ChipviInputError(f"This plot needs {n} Axes, got {len(axes)}.")
    return axes[0].figure, axes


def concordance(
    adata: AnnData,
    library_1: str | None = None,
    library_2: str | None = None,
    *,
    group: str | None = None,
    denoised: str | pd.DataFrame | None = None,
    layer: str | None = None,
    gridsize: int = 60,
    ax: Any = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> list[Any]:
    """Hexbin of one replicate against another: raw (log1p CPM) and, optionally, denoised.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout, or a bins store (:func:`chipvi.io.open_store` or its
        path): read a chunk at a time into a ``gridsize`` × ``gridsize`` 2D histogram instead
        of hexagons.
    library_1, library_2
        Libraries to compare; default the first two libraries of ``group`` (or of the first group
        with two libraries).
    group
        Group whose first two replicates are compared when libraries are not given.
    denoised
        Library-level denoised values for a second panel: a layer name (``"chipvi_lfe"``
        after ``model.add_posterior(adata)``) or a DataFrame.
    layer
        Raw counts (``None``: ``X``).
    gridsize
        Hexagons across.
    ax
        One Axes (raw only) or two (raw, denoised) to draw into.
    show, save, return_fig
        See :func:`chipvi.pl.tracks`.

    Returns
    -------
    list of matplotlib.axes.Axes
        ``None`` when shown, the Figure with ``return_fig`` (see :func:`chipvi.pl.tracks`).
    """
    if is_store(adata):
        adata = open_store(adata)
    names = adata.var.index
    if library_1 is None or library_2 is None:
        groups = adata.var["group"].astype(str)
        candidates = [group] if group is not None else list(pd.unique(groups))
        if group is not None and group not in set(groups):
            raise ChipviInputError(f"Unknown group {group!r}; groups: {list(pd.unique(groups))}.")
        pairs = [list(names[groups == g]) for g in candidates]
        pairs = [p for p in pairs if len(p) >= 2]
        if not pairs:
            raise ChipviInputError("No group with two replicates; pass library_1 and library_2.")
        library_1, library_2 = pairs[0][:2]
    for lib in (library_1, library_2):
        if lib not in names:
            raise ChipviInputError(f"Unknown library {lib!r}; libraries: {list(names)}.")
    if is_store(adata):
        sources = _store_sources(adata, layer, denoised)
    else:
        sources = {"raw log1p CPM": log_cpm(adata, layer)}
        if denoised is not None:
            sources["denoised"] = library_signal(adata, denoised)
    fig, axes = _axes(ax, len(sources), size=(4.4, 3.8))
    for a, (name, frame) in zip(axes, sources.items(), strict=True):
        if callable(frame):  # a store: a 2D histogram, a chunk at a time
            hexes, r = _histogram(a, adata, frame, (library_1, library_2), gridsize)
        else:
            x, y = frame[library_1].to_numpy(), frame[library_2].to_numpy()
            ok = np.isfinite(x) & np.isfinite(y)
            hexes = a.hexbin(x[ok], y[ok], gridsize=gridsize, bins="log", cmap="viridis",
                             mincnt=1)  # fmt: skip
            r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 2 else np.nan
        a.set_title(f"{name}\nPearson r = {r:.3f}", fontsize=9)
        a.set_xlabel(library_1, fontsize=8)
        a.set_ylabel(library_2, fontsize=8)
        a.tick_params(labelsize=7)
        bar = fig.colorbar(hexes, ax=a, fraction=0.046, pad=0.03)
        bar.set_label("bins (log scale)", fontsize=7)
        bar.ax.tick_params(which="both", labelsize=6)
    if ax is None:
        fig.tight_layout()
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, own_figure=ax is None)


def _store_sources(store, layer, denoised) -> dict:
    """Readers of a store's rows ``[a, b)`` (raw log1p CPM, denoised) for :func:`concordance`."""
    readers = Blocks(store).signal_readers(layer, denoised)
    return {"raw log1p CPM" if k == "raw" else k: read for k, read in readers.items()}


def _histogram(a, store, read, libraries, gridsize: int):
    """Bins of a store in a ``gridsize`` × ``gridsize`` 2D histogram (two passes: the range and
    Pearson r, then the counts), drawn on a log colour scale; ``(mesh, r)``."""
    from matplotlib.colors import LogNorm

    bins = Blocks(store)
    cols = [bins.var_names.index(lib) for lib in libraries]

    def pairs():
        for start, stop in bins.ranges:
            v = read(start, stop)[:, cols]
            ok = np.isfinite(v).all(axis=1)
            yield v[ok, 0], v[ok, 1]

    moments = Moments()
    for x, y in pairs():
        moments.add(x, y)
    edges = [np.linspace(lo, hi if hi > lo else lo + 1, gridsize + 1)
             for lo, hi in zip(moments.lo, moments.hi, strict=True)]  # fmt: skip
    counts = np.zeros((gridsize, gridsize))
    for x, y in pairs():
        counts += np.histogram2d(x, y, bins=edges)[0]
    counts[counts == 0] = np.nan
    mesh = a.pcolormesh(edges[0], edges[1], counts.T, cmap="viridis",
                        norm=LogNorm(vmin=1, vmax=max(np.nanmax(counts), 1) if moments.n else 1))  # fmt: skip
    return mesh, moments.pearson()


def fingerprint(
    adata: AnnData,
    *,
    key: str = "chipvi_fingerprint",
    samples: Sequence[str] | None = None,
    controls: bool = True,
    ax: Any = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Any:
    """deepTools-style fingerprint: cumulative share of reads against rank of bins.

    Uses the curves stored by :func:`chipvi.tl.fingerprint` under ``uns[key]`` (computed with
    default settings if absent). Controls are drawn dashed. ``adata`` may be a bins store (or
    its path): the curves of ``tl.fingerprint(store)`` on that open store, else computed a
    chunk at a time.

    Returns
    -------
    matplotlib.axes.Axes
        ``None`` when shown, the Figure with ``return_fig`` (see :func:`chipvi.pl.tracks`).
    """
    if is_store(adata):
        adata = open_store(adata)
    if key not in adata.uns:
        _fingerprint(adata, key_added=key)
    curve = stored(adata, key, "curve", "fingerprint")
    libs = [c for c in curve.columns if c != "rank" and ":control" not in c]
    if samples is not None:
        unknown = [s for s in samples if s not in libs]
        if unknown:
            raise ChipviInputError(f"No fingerprint for {unknown}; have {libs}.")
        libs = list(samples)
    fig, (a,) = _axes(ax, 1, size=(4.5, 4.0))
    for lib in libs:
        (line,) = a.plot(curve["rank"], curve[lib], label=lib)
        if controls and f"{lib}:control" in curve:
            a.plot(
                curve["rank"], curve[f"{lib}:control"], ls="--", color=line.get_color(), alpha=0.6
            )
    a.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":", label="uniform coverage")
    if controls and any(f"{lib}:control" in curve for lib in libs):
        # one legend entry explains every dashed curve
        a.plot([], [], color="0.3", ls="--", alpha=0.6, label="its control (dashed)")
    a.set_xlabel("rank of bins (fraction)")
    a.set_ylabel("fraction of reads")
    a.legend(fontsize=7, loc="upper left", frameon=False)
    return finish(fig, a, show=show, save=save, return_fig=return_fig, own_figure=ax is None)


def training_history(
    model: Any,
    keys: Sequence[str] | None = None,
    *,
    ax: Any = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Any:
    """Training curves from ``model.history`` (dict of per-epoch DataFrames, scvi-tools style).

    Parameters
    ----------
    model
        A trained model with a ``history`` attribute.
    keys
        History entries to plot (default all with at least one value, e.g. ``elbo_train``).

    Returns
    -------
    matplotlib.axes.Axes
        ``None`` when shown, the Figure with ``return_fig`` (see :func:`chipvi.pl.tracks`).
    """
    history = getattr(model, "history", None)
    if not history:
        raise ChipviInputError("The model has no training history; train it first.")
    names = [k for k in history if len(history[k])] if keys is None else list(keys)
    unknown = [k for k in names if k not in history]
    if unknown:
        raise ChipviInputError(f"No history entries {unknown}; have {list(history)}.")
    fig, (a,) = _axes(ax, 1, size=(5.0, 3.6))
    for k in names:
        frame = history[k]
        series = frame.iloc[:, 0] if isinstance(frame, pd.DataFrame) else pd.Series(frame)
        a.plot(np.asarray(series.index, dtype=float), series.to_numpy(dtype=float), label=k)
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend(fontsize=8)
    return finish(fig, a, show=show, save=save, return_fig=return_fig, own_figure=ax is None)


def technical_fit(
    adata: AnnData,
    *,
    mu: str | pd.DataFrame | None = None,
    samples: Sequence[str] | None = None,
    n_bins: int = 30,
    control_layer: str = "control",
    posterior_key: str = POSTERIOR_KEY,
    ax: Any = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> list[Any] | None:
    """Observed vs model-expected counts, in bins of the matched control's count.

    For each library, bins are grouped by control count (quantile groups); the panel shows the
    mean observed ChIP count and the mean technical expectation ``mu`` per group. Where the
    technical model fits, the two follow each other except for the enriched upper tail.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout.
    mu
        Technical means, bins × libraries: a layer name or a DataFrame. Default: the layer
        ``model.add_posterior(adata)`` wrote (``chipvi_mu``).
    samples
        Libraries to plot (default all; one panel each).
    n_bins
        Control-count groups.
    control_layer
        Matched control counts.
    posterior_key
        ``uns`` key of the posterior record (for the default ``mu``).
    ax, show, save, return_fig
        See :func:`chipvi.pl.tracks` (``ax``: one Axes per library).

    Returns
    -------
    list of matplotlib.axes.Axes
        ``None`` when shown, the Figure with ``return_fig`` (see :func:`chipvi.pl.tracks`).
    """
    if mu is None:
        mu = posterior_frame(adata, "mu", "technical", key=posterior_key)
    elif isinstance(mu, str):
        mu = signal_frame(adata, layer=mu)
    libs = list(adata.var_names) if samples is None else list(samples)
    unknown = [s for s in libs if s not in adata.var_names or s not in mu.columns]
    if unknown:
        raise ChipviInputError(f"Unknown library {unknown}; libraries: {list(adata.var_names)}.")
    observed = signal_frame(adata)
    control = signal_frame(adata, layer=control_layer)
    fig, axes = _axes(ax, len(libs), size=(3.8, 3.4))
    for a, lib in zip(axes, libs, strict=True):
        c = control[lib].to_numpy()
        # Equal steps of log(1 + control): sparse controls (mostly 0 or 1 read) still give a
        # point per count value, deep ones spread over the whole range (quantile groups
        # collapsed to two or three points on sparse data).
        edges = np.linspace(0.0, np.log1p(max(float(c.max()), 1.0)), int(n_bins) + 1)
        which = np.clip(np.searchsorted(edges, np.log1p(c), side="right") - 1, 0, int(n_bins) - 1)
        groups = pd.DataFrame(
            {"g": which, "c": c, "y": observed[lib].to_numpy(), "mu": mu[lib].to_numpy()}
        )
        means = groups.groupby("g").mean()
        a.plot(means["c"], means["y"], "o", ms=3, label="observed")
        a.plot(means["c"], means["mu"], "-", label="expected (mu)")
        a.set_xscale("symlog", linthresh=1.0)
        a.set_title(lib, fontsize=9)
        a.set_xlabel("control reads per bin", fontsize=8)
        a.set_ylabel("mean ChIP reads per bin", fontsize=8)
        a.tick_params(labelsize=7)
        a.legend(fontsize=7, frameon=False)
    if ax is None:
        fig.tight_layout()
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, own_figure=ax is None)


def differential(
    data: AnnData | pd.DataFrame,
    *,
    key: str = "chipvi_differential",
    ax: Any = None,
    show: bool | None = None,
    save: str | os.PathLike | None = None,
    return_fig: bool = False,
) -> Any:
    """MA plot of :func:`chipvi.tl.differential_enrichment`: mean log enrichment vs lfc.

    ``A`` = mean of the two groups' log fold enrichment, ``M`` = posterior mean lfc; bins called
    up / down are coloured.

    Parameters
    ----------
    data
        The per-bin table, or an AnnData holding it in ``obsm[key]``.

    Returns
    -------
    matplotlib.axes.Axes
        ``None`` when shown, the Figure with ``return_fig`` (see :func:`chipvi.pl.tracks`).
    """
    if isinstance(data, AnnData):
        if key not in data.obsm:
            raise ChipviInputError(
                f"adata.obsm has no {key!r}; run chipvi.tl.differential_enrichment first."
            )
        data = data.obsm[key]
    need = {"lfe1", "lfe2", "lfc_mean", "direction"}
    if not isinstance(data, pd.DataFrame) or not need <= set(data.columns):
        raise ChipviInputError(f"The differential table needs columns {sorted(need)}.")
    fig, (a,) = _axes(ax, 1, size=(5.0, 4.0))
    avg = (data["lfe1"] + data["lfe2"]).to_numpy() / 2
    lfc = data["lfc_mean"].to_numpy()
    d = data["direction"].to_numpy()
    a.scatter(avg[d == 0], lfc[d == 0], s=3, c="0.7", rasterized=True, label="not called")
    a.scatter(avg[d > 0], lfc[d > 0], s=5, c="tab:red", label=f"up ({int((d > 0).sum())})")
    a.scatter(avg[d < 0], lfc[d < 0], s=5, c="tab:blue", label=f"down ({int((d < 0).sum())})")
    a.axhline(0, color="k", lw=0.6)
    a.set_xlabel("mean log fold enrichment (A)")
    a.set_ylabel("log fold change (M)")
    a.legend(fontsize=7, markerscale=2)
    return finish(fig, a, show=show, save=save, return_fig=return_fig, own_figure=ax is None)
