"""Quality control: replicate concordance, fingerprint (deepTools/CHANCE metrics), FRiP."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from .._bins import library_signal, log_cpm, overlap_mask, signal_frame
from .._errors import ChipviInputError
from .._store import store, stored
from ..io import read_regions


def _library_groups(adata: AnnData, groups: Sequence[str] | str | None) -> dict[str, list[str]]:
    if "group" not in adata.var:
        raise ChipviInputError("adata.var has no 'group' column; build the AnnData with read_bams.")
    by_group = {
        str(g): list(adata.var_names[adata.var["group"].astype(str) == g])
        for g in pd.unique(adata.var["group"].astype(str))
    }
    if groups is None:
        return by_group
    wanted = [groups] if isinstance(groups, str) else list(groups)
    unknown = [g for g in wanted if g not in by_group]
    if unknown:
        raise ChipviInputError(f"Unknown group(s) {unknown}; groups: {list(by_group)}.")
    return {g: by_group[g] for g in wanted}


def _top_k(n: int, top_k: int | float) -> int:
    if isinstance(top_k, float) and 0 < top_k < 1:
        return max(1, int(round(top_k * n)))
    if int(top_k) < 1 or int(top_k) > n:
        raise ChipviInputError(
            f"top_k must be a fraction in (0, 1) or a count in [1, {n}], got {top_k}."
        )
    return int(top_k)


def _pair_metrics(x: np.ndarray, y: np.ndarray, k: int) -> dict[str, float]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        pearson = spearman = np.nan
    else:
        pearson = float(stats.pearsonr(x, y)[0])
        spearman = float(stats.spearmanr(x, y)[0])
    # Top-k bins by value; stable ranking so ties resolve in genomic order.
    top_x = set(np.argsort(-x, kind="stable")[:k])
    top_y = set(np.argsort(-y, kind="stable")[:k])
    jaccard = len(top_x & top_y) / len(top_x | top_y) if top_x | top_y else np.nan
    return {"pearson": pearson, "spearman": spearman, "jaccard": jaccard}


def replicate_concordance(
    adata: AnnData,
    *,
    layer: str | None = None,
    denoised: str | pd.DataFrame | None = None,
    groups: Sequence[str] | str | None = None,
    top_k: int | float = 0.05,
    key_added: str | None = "chipvi_concordance",
) -> pd.DataFrame:
    """Agreement between replicates of each group, raw and denoised side by side.

    For every pair of libraries in a group: Pearson and Spearman correlation over bins and the
    Jaccard index of their top-k bins.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout (``var['group']`` defines the replicates).
    layer
        Raw counts (``None``: ``X``); compared as log1p counts per million (``var['depth']``).
    denoised
        Library-level denoised values: a layer name (after ``model.add_posterior(adata)``:
        ``"chipvi_lfe"``, or ``"chipvi_own_lfe"`` for each library's own evidence) or a bins ×
        libraries DataFrame. ``None`` reports raw only.
    groups
        Groups to report (default all with at least two libraries).
    top_k
        Bins per library for the Jaccard index: a count, or a fraction of bins if in (0, 1).
    key_added
        Store ``{"params": ..., "table": table}`` in ``adata.uns[key_added]`` (``None``: do
        not store).

    Returns
    -------
    pandas.DataFrame
        One row per replicate pair: ``group``, ``library_1``, ``library_2``, then
        ``pearson_raw, spearman_raw, jaccard_raw`` and, with ``denoised``, the same three with
        the ``_denoised`` suffix.
    """
    by_group = _library_groups(adata, groups)
    k = _top_k(adata.n_obs, top_k)
    sources = {"raw": log_cpm(adata, layer)}
    if denoised is not None:
        sources["denoised"] = library_signal(adata, denoised)
    rows = []
    for group, libs in by_group.items():
        for a, b in itertools.combinations(libs, 2):
            row: dict[str, Any] = {"group": group, "library_1": a, "library_2": b}
            for name, frame in sources.items():
                m = _pair_metrics(frame[a].to_numpy(), frame[b].to_numpy(), k)
                row.update({f"{metric}_{name}": v for metric, v in m.items()})
            rows.append(row)
    if not rows:
        raise ChipviInputError(
            "No group has two or more libraries; replicate concordance needs replicates."
        )
    table = pd.DataFrame(rows)
    params = {
        "layer": layer, "denoised": denoised if isinstance(denoised, str) else None,
        "groups": list(by_group), "top_k": top_k,
    }  # fmt: skip
    store(adata, key_added, params, table=table)
    return table


# --- fingerprint -------------------------------------------------------------------------------


def fingerprint_curve(counts: np.ndarray) -> np.ndarray:
    """deepTools plotFingerprint curve: cumulative share of reads in bins sorted by count."""
    c = np.cumsum(np.sort(np.asarray(counts, dtype=np.float64)))
    return c / c[-1] if c.size and c[-1] > 0 else np.zeros_like(c)


def _expected_poisson(mu: float) -> tuple[float, float, float]:
    """AUC, X-intercept and elbow of a perfectly uniform (Poisson, mean ``mu``) sample."""
    if not mu > 0:
        return np.nan, np.nan, np.nan
    x = np.arange(int(stats.poisson.ppf(1 - 1e-6, mu)) + 2)
    pmf = stats.poisson.pmf(x, mu)
    cdf = stats.poisson.cdf(x, mu)
    share = np.cumsum(pmf * x)
    share /= share[-1]
    auc = float(np.sum(pmf * share))
    x_intercept = float(cdf[np.flatnonzero(share > 0)[0]])
    elbow = float(cdf[np.argmax(cdf - share)])
    return auc, x_intercept, elbow


def _signal_cdf_on_grid(hist: np.ndarray) -> np.ndarray | None:
    """Share of signal against share of (non-zero) bins, on a 1e-5 grid (deepTools' JSD)."""
    values = np.arange(hist.size, dtype=np.float64)
    signal = hist * values
    if hist.sum() <= 0 or signal.sum() <= 0:
        return None
    bins_share = np.cumsum(hist) / hist.sum()
    signal_share = np.cumsum(signal) / signal.sum()
    grid = np.arange(0, 1.00001, 0.00001)
    out = np.interp(grid, bins_share, signal_share, left=0.0, right=1.0)
    return out


def _jensen_shannon_distance(hist_a: np.ndarray, hist_b: np.ndarray) -> float:
    size = max(hist_a.size, hist_b.size)
    a = np.pad(hist_a, (0, size - hist_a.size))
    b = np.pad(hist_b, (0, size - hist_b.size))
    ca, cb = _signal_cdf_on_grid(a), _signal_cdf_on_grid(b)
    if ca is None or cb is None:
        return np.nan
    pa, pb = np.diff(ca), np.diff(cb)
    m = (pa + pb) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_a = np.nansum(np.where(pa > 0, pa * np.log2(pa / m), 0.0))
        kl_b = np.nansum(np.where(pb > 0, pb * np.log2(pb / m), 0.0))
    return float(np.sqrt(max(0.5 * kl_a + 0.5 * kl_b, 0.0)))


def _nonzero_histogram(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(np.rint(counts), dtype=np.int64)
    c = c[c > 0]
    return np.bincount(c).astype(np.float64) if c.size else np.zeros(1)


def _binary_relative_entropy(p: float, q: float) -> float:
    x1 = p * np.log2(p / q) if p > 0 else 0.0
    x2 = (1 - p) * np.log2((1 - p) / (1 - q)) if p < 1 else 0.0
    return max(0.0, x1 + x2)


def _chance(chip: np.ndarray, control: np.ndarray) -> tuple[float, float, float]:
    """CHANCE (Diaz et al. 2012) as deepTools reports it: % genome enriched, differential
    enrichment and the binary-entropy divergence at the point of largest difference."""
    order = np.argsort(chip)  # numpy default sort, as deepTools (ties make CHANCE order-dependent)
    cs_chip = np.cumsum(chip[order].astype(np.float64))
    cs_ctrl = np.cumsum(control[order].astype(np.float64))
    if cs_chip[-1] <= 0 or cs_ctrl[-1] <= 0:
        return np.nan, np.nan, np.nan
    diff = cs_ctrl / cs_ctrl[-1] - cs_chip / cs_chip[-1]
    k = int(np.argmax(diff))
    if diff[k] < 1e-6:
        return 0.0, 0.0, 0.0
    p, q = cs_chip[k] / cs_chip[-1], cs_ctrl[k] / cs_ctrl[-1]
    m = (p + q) / 2
    divergence = np.sqrt(0.5 * (_binary_relative_entropy(p, m) + _binary_relative_entropy(q, m)))
    return 100.0 * (chip.size - k) / chip.size, 100.0 * (q - p), float(divergence)


def fingerprint_metrics(counts: np.ndarray, control: np.ndarray | None = None) -> dict[str, float]:
    """deepTools ``plotFingerprint --outQualityMetrics`` numbers for one library.

    ``auc``, ``x_intercept``, ``elbow_point`` of the fingerprint curve and their ``synthetic_``
    counterparts for a Poisson sample of the same mean; ``synthetic_js_distance`` against that
    Poisson sample; with a control: ``js_distance``, ``pct_genome_enriched``,
    ``diff_enrichment`` and ``chance_divergence`` (CHANCE).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size
    curve = fingerprint_curve(counts)
    line = np.arange(n) / max(n - 1, 1)
    out = {
        "auc": float(curve.mean()),
        "x_intercept": float((np.argmax(curve > 0) + 1) / n),
        "elbow_point": float((np.argmax(line - curve) + 1) / n),
    }
    mu = float(counts.mean())
    out["synthetic_auc"], out["synthetic_x_intercept"], out["synthetic_elbow_point"] = (
        _expected_poisson(mu)
    )
    chip_hist = _nonzero_histogram(counts)
    if mu > 0:
        # Expected histogram of a uniform sample: n · Poisson(k; mu) for k >= 1 (zeros dropped
        # like the observed histogram).
        ks = np.arange(max(chip_hist.size, int(stats.poisson.ppf(1 - 1e-9, mu)) + 2))
        synthetic = n * stats.poisson.pmf(ks, mu)
        synthetic[0] = 0.0
        out["synthetic_js_distance"] = _jensen_shannon_distance(chip_hist, synthetic)
    else:
        out["synthetic_js_distance"] = np.nan
    if control is not None and np.asarray(control).sum() > 0:
        control = np.asarray(control, dtype=np.float64)
        out["js_distance"] = _jensen_shannon_distance(chip_hist, _nonzero_histogram(control))
        out["pct_genome_enriched"], out["diff_enrichment"], out["chance_divergence"] = _chance(
            counts, control
        )
    else:
        for name in ("js_distance", "pct_genome_enriched", "diff_enrichment", "chance_divergence"):
            out[name] = np.nan
    return out


def fingerprint(
    adata: AnnData,
    *,
    layer: str | None = None,
    control_layer: str | None = "control",
    samples: Sequence[str] | str | None = None,
    n_points: int = 1000,
    key_added: str | None = "chipvi_fingerprint",
) -> pd.DataFrame:
    """Fingerprint curves and deepTools/ENCODE-style enrichment metrics per library.

    The curve (deepTools ``plotFingerprint``) sorts bins by count and plots the cumulative share
    of reads against the share of bins: a uniform library follows the diagonal, a library with
    strong, focal enrichment bends sharply at the right. Metrics follow deepTools'
    ``--outQualityMetrics`` definitions (AUC, X-intercept, elbow point, each with the value
    expected of a Poisson sample of the same mean; Jensen–Shannon distance to the matched control
    and to that synthetic sample; CHANCE % genome enriched, differential enrichment, divergence).
    The synthetic JS distance uses the Poisson histogram at counts k ≥ 1 aligned with the observed
    one (deepTools shifts it by one count), so values can differ slightly from deepTools'.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout.
    layer
        Counts (``None``: ``X``).
    control_layer
        Matched control counts aligned to each library (``None``: no control metrics). Libraries
        whose control is all zero get NaN control metrics.
    samples
        Libraries to report (default all).
    n_points
        Points kept per curve (evenly spaced ranks) in ``uns[key_added]['curve']``.
    key_added
        Store ``{'params': ..., 'metrics': DataFrame, 'curve': DataFrame}`` in
        ``adata.uns[key_added]`` (``None``: do not store). The curve has a ``rank`` column
        (share of bins) and, per library, the share of reads (control curves as
        ``<library>:control``).

    Returns
    -------
    pandas.DataFrame
        Libraries × metrics.
    """
    counts = signal_frame(adata, layer=layer, columns=samples)
    controls = (
        signal_frame(adata, layer=control_layer, columns=list(counts.columns))
        if control_layer is not None
        else None
    )
    if int(n_points) < 2:
        raise ChipviInputError(f"n_points must be >= 2, got {n_points}.")
    n = adata.n_obs
    pick = np.unique(np.linspace(0, n - 1, min(int(n_points), n)).round().astype(np.int64))
    curves = {"rank": (pick + 1) / n}
    rows = {}
    for lib in counts.columns:
        y = counts[lib].to_numpy()
        ctrl = controls[lib].to_numpy() if controls is not None else None
        rows[lib] = fingerprint_metrics(y, ctrl)
        curves[lib] = fingerprint_curve(y)[pick]
        if ctrl is not None and ctrl.sum() > 0:
            curves[f"{lib}:control"] = fingerprint_curve(ctrl)[pick]
    metrics = pd.DataFrame.from_dict(rows, orient="index")
    metrics.index.name = "library"
    params = {"layer": layer, "control_layer": control_layer, "n_points": int(n_points)}
    store(adata, key_added, params, metrics=metrics, curve=pd.DataFrame(curves))
    return metrics


# --- FRiP ------------------------------------------------------------------------------------


def frip(
    adata: AnnData,
    regions: pd.DataFrame | str | os.PathLike,
    *,
    layer: str | None = None,
    per_group: bool | None = None,
    key_added: str | None = "chipvi_frip",
) -> pd.Series:
    """Fraction of reads in regions (FRiP) per library, at bin resolution.

    A bin counts as "in a region" when it overlaps one; FRiP is the share of the library's binned
    reads in such bins (a slight overestimate of base-level FRiP for regions much narrower than a
    bin).

    Parameters
    ----------
    adata
        AnnData in the chipvi layout.
    regions
        A regions table (``chrom, start, end``; e.g. from :func:`call_enriched_regions`), the
        ``uns`` key of such a result (e.g. ``"chipvi_regions"``), or a BED/narrowPeak/broadPeak
        path.
    layer
        Counts (``None``: ``X``).
    per_group
        Use only the regions of each library's own group (``regions['group']`` against
        ``var['group']``). Default: when the table has a ``group`` column that names groups of
        ``adata``.
    key_added
        Also store the result as ``adata.var[key_added]`` and the parameters in
        ``adata.uns[key_added]["params"]`` (``None``: do not store).

    Returns
    -------
    pandas.Series
        FRiP per library.
    """
    source = None if isinstance(regions, pd.DataFrame) else str(regions)
    if isinstance(regions, str) and regions in adata.uns:
        regions = stored(adata, regions, "regions", "call_enriched_regions")
    table = read_regions(regions)
    counts = signal_frame(adata, layer=layer)
    groups = adata.var["group"].astype(str) if "group" in adata.var else None
    if per_group is None:
        per_group = (
            "group" in table
            and groups is not None
            and bool(set(table["group"].astype(str)) & set(groups))
        )
    if per_group and ("group" not in table or groups is None):
        raise ChipviInputError("per_group=True needs a 'group' column in regions and adata.var.")
    result = {}
    masks: dict[str, np.ndarray] = {}
    for lib in counts.columns:
        sel = table
        if per_group:
            g = groups[lib]
            if g not in masks:
                own = table[table["group"].astype(str) == g]
                masks[g] = overlap_mask(adata, own["chrom"], own["start"], own["end"])
            mask = masks[g]
        else:
            if "all" not in masks:
                masks["all"] = overlap_mask(adata, sel["chrom"], sel["start"], sel["end"])
            mask = masks["all"]
        y = counts[lib].to_numpy()
        total = y.sum()
        result[lib] = float(y[mask].sum() / total) if total > 0 else np.nan
    series = pd.Series(result, name="frip")
    if key_added is not None:
        adata.var[key_added] = series.reindex(adata.var_names).to_numpy()
        params = {"regions": source, "n_regions": len(table), "layer": layer,
                  "per_group": bool(per_group)}  # fmt: skip
        store(adata, key_added, params)
    return series
