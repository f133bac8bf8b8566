"""Differential enrichment between two groups from the posterior of their log fold enrichment.

The scvi-tools ``differential_expression`` analogue for bins: for each bin, the posterior of
``lfc = z_group1 − z_group2`` (natural log) is summarised by its mean and sd and by the
probability that it exceeds ``delta`` in either direction. Bins are called differential by
Bayesian FDR control on that probability (expected share of false calls ≤ ``fdr``), then
neighbouring bins with the same direction are merged into regions.

Groups have independent chains given the fitted model, so the mean and sd of a bin's ``lfc``
are exact from the per-group posterior means and sds that ``model.add_posterior`` stores.

The tested quantity is the mean ``lfc`` over a window of ``window`` bins centred on each bin
(within its chain of adjacent bins), not a single bin's, and a bin is called only where its own
posterior mean ``lfc`` also lies beyond ``delta`` in the same direction: each group's chain is piecewise
constant, so two groups with the same smooth peak place their steps a bin apart and a single
flank bin then shows a confident but spurious change (on simulations with known truth, per-bin
calls had a 30 % false discovery rate at a 5 % target; benchmarks/log/
2026-12-07-differential-window.md). A window's mean cancels such shifts. Its sd is taken as
the mean of the bins' sds, the exact value when neighbouring bins' posteriors are perfectly
correlated and an upper bound otherwise (neighbours on a chain are positively correlated).
Tail probabilities take the window's ``lfc`` as Gaussian with that mean and sd.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import norm

from .._bins import bin_coordinates, genomic_order, run_starts
from .._errors import ChipviInputError
from .._posterior import POSTERIOR_KEY, posterior_frame
from .._store import store
from ._regions import bayesian_qvalues, empty_region_table, regions_from_bins


def _check_groups(names: list[str], group1: str, group2: str | None) -> None:
    for g in [group1] + ([group2] if group2 is not None else []):
        if g not in names:
            raise ChipviInputError(f"Unknown group {g!r}; the posterior's groups are {names}.")
    if group1 == group2:
        raise ChipviInputError("group1 and group2 must differ.")
    if group2 is None and len(names) < 2:
        raise ChipviInputError("Differential enrichment needs at least two groups.")


def differential_enrichment(
    adata: AnnData,
    group1: str,
    group2: str | None = None,
    *,
    delta: float = 0.5,
    fdr: float = 0.05,
    window: int = 5,
    merge_gap: int = 0,
    min_bins: int = 1,
    posterior_key: str = POSTERIOR_KEY,
    key_added: str | None = "chipvi_differential",
) -> pd.DataFrame:
    """Per-bin differential enrichment between two groups, with merged differential regions.

    Reads the group-level posterior that ``model.add_posterior(adata)`` wrote.

    Parameters
    ----------
    adata
        AnnData with the posterior of ``model.add_posterior``. Results are stored there.
    group1, group2
        Groups to compare (``lfc = group1 − group2``). ``group2=None`` compares with the mean of
        all other groups ("rest").
    delta
        Smallest absolute lfc (natural log) that counts as a change; 0.5 ≈ 1.65-fold.
    fdr
        Target Bayesian false discovery rate for calling bins.
    window
        Odd number of bins whose mean lfc is tested at each bin (the bin and ``window // 2``
        neighbours each side, fewer at chromosome ends and gaps); ``1`` tests single bins.
    merge_gap, min_bins
        Region merging as in :func:`chipvi.tl.call_enriched_regions`.
    posterior_key
        ``uns`` key of the posterior record.
    key_added
        Store the per-bin table in ``adata.obsm[key_added]`` and ``{"params": ...,
        "regions": ...}`` in ``adata.uns[key_added]`` (``None``: store nothing).

    Returns
    -------
    pandas.DataFrame
        Index ``obs_names``; columns ``lfe1``, ``lfe2`` (posterior mean log fold enrichment of
        each side), ``lfc_mean``, ``lfc_sd`` (the bin's lfc), ``window_lfc``, ``window_sd``
        (the mean lfc over the window and its sd), ``prob_up`` (P(window lfc > delta)),
        ``prob_down`` (P(window lfc < −delta)), ``prob_change`` (their sum), ``qvalue``
        (Bayesian FDR of calling the bin), ``is_differential`` (``qvalue ≤ fdr`` and
        ``lfc_mean`` beyond ±``delta`` the same way) and ``direction`` (+1 when group1 is
        higher, −1 when lower, 0 when not called).
    """
    mean = posterior_frame(adata, "log_fold_enrichment", "group", key=posterior_key)
    sd = posterior_frame(adata, "sd", "group", key=posterior_key)
    names = [str(c) for c in mean.columns]
    _check_groups(names, group1, group2)
    if not delta >= 0:
        raise ChipviInputError(f"delta must be >= 0, got {delta}.")
    if not 0 < fdr < 1:
        raise ChipviInputError(f"fdr must be in (0, 1), got {fdr}.")
    odd = isinstance(window, (int, np.integer)) and not isinstance(window, bool)
    if not odd or window < 1 or window % 2 == 0:
        raise ChipviInputError(f"window must be an odd number of bins >= 1, got {window!r}.")
    i1 = names.index(group1)
    others = (
        [names.index(group2)] if group2 is not None else [i for i in range(len(names)) if i != i1]
    )
    m, s = mean.to_numpy(dtype=np.float64), sd.to_numpy(dtype=np.float64)
    lfe2 = m[:, others].mean(axis=1)
    lfc = m[:, i1] - lfe2
    # independent chains: variances add (the rest's mean divides its variance by K²)
    lfc_sd = np.sqrt(s[:, i1] ** 2 + (s[:, others] ** 2).sum(axis=1) / len(others) ** 2)
    window_lfc, window_sd = lfc.copy(), lfc_sd.copy()
    if window > 1:
        order = genomic_order(adata)
        flags = run_starts(adata.obs.iloc[order])
        window_lfc[order] = window_mean(lfc[order], flags, int(window))
        window_sd[order] = window_mean(lfc_sd[order], flags, int(window))
    scale = np.maximum(window_sd, 1e-12)
    table = pd.DataFrame(
        {
            "lfe1": m[:, i1],
            "lfe2": lfe2,
            "lfc_mean": lfc,
            "lfc_sd": lfc_sd,
            "window_lfc": window_lfc,
            "window_sd": window_sd,
            "prob_up": norm.sf(delta, loc=window_lfc, scale=scale),
            "prob_down": norm.cdf(-delta, loc=window_lfc, scale=scale),
        },
        index=adata.obs_names,
    )
    table["prob_change"] = table["prob_up"] + table["prob_down"]
    table["qvalue"] = bayesian_qvalues(table["prob_change"].to_numpy())
    up = (table["prob_up"] >= table["prob_down"]).to_numpy()
    # The bin itself must change beyond delta the window's way: a window that changes
    # because of its neighbours does not call its flank bins.
    own = np.where(up, lfc > delta, lfc < -delta)
    table["is_differential"] = (table["qvalue"] <= fdr).to_numpy() & own
    table["direction"] = np.where(table["is_differential"], np.where(up, 1, -1), 0).astype(np.int8)
    regions = differential_regions(
        adata, table, label=f"{group1}_vs_{group2 or 'rest'}", merge_gap=merge_gap,
        min_bins=min_bins,
    )  # fmt: skip
    if key_added is not None:
        adata.obsm[key_added] = table
        params = {
            "group1": group1, "group2": group2 or "rest", "delta": float(delta),
            "fdr": float(fdr), "window": int(window), "merge_gap": int(merge_gap),
            "min_bins": int(min_bins),
            "source": f"uns[{posterior_key!r}]",
        }  # fmt: skip
        store(adata, key_added, params, regions=regions)
    return table


def window_mean(values: np.ndarray, run_start: np.ndarray, window: int) -> np.ndarray:
    """Mean of ``values`` (genomic order) over ``window`` bins centred on each bin, cut at the
    chain starts flagged by ``run_start`` (the window never spans a chromosome end or gap)."""
    n, half = len(values), window // 2
    idx = np.arange(n)
    first = np.maximum.accumulate(np.where(run_start, idx, 0))  # start of each bin's chain
    nxt = np.flatnonzero(run_start)
    ends = np.append(nxt[1:], n)[np.cumsum(run_start) - 1]  # end of each bin's chain
    lo = np.maximum(idx - half, first)
    hi = np.minimum(idx + half + 1, ends)
    total = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (total[hi] - total[lo]) / (hi - lo)


def differential_regions(
    adata: AnnData,
    table: pd.DataFrame,
    *,
    label: str,
    merge_gap: int = 0,
    min_bins: int = 1,
) -> pd.DataFrame:
    """Merge called bins of a differential table into regions, separately per direction.

    Returns the region table of :func:`chipvi.tl.call_enriched_regions` (``group`` = ``label``,
    ``signal`` = posterior mean lfc at the summit, the bin with the largest absolute lfc) plus a
    ``direction`` column.
    """
    order = genomic_order(adata)
    chrom, start, end = (a[order] for a in bin_coordinates(adata))
    names = np.asarray(adata.obs_names)[order]
    t = table.iloc[order]
    bin_size = int(adata.uns.get("chipvi", {}).get("bin_size", 200))
    tables = []
    for direction in (1, -1):
        called = (t["direction"] == direction).to_numpy()
        lfc = t["lfc_mean"].to_numpy()
        reg = regions_from_bins(
            called, chrom, start, end, rank_value=direction * lfc, merge_gap=int(merge_gap),
            min_bins=int(min_bins), bin_size=bin_size, extra_min={"_q": t["qvalue"].to_numpy()},
        )  # fmt: skip
        if reg.empty:
            continue
        s = reg["summit_index"].to_numpy()
        qv = -np.log10(np.clip(reg["_q"].to_numpy(), 1e-300, 1.0))
        tables.append(
            pd.DataFrame(
                {
                    "chrom": reg["chrom"].astype(str),
                    "start": reg["start"].astype(np.int64),
                    "end": reg["end"].astype(np.int64),
                    "name": "",
                    "group": label,
                    "n_bins": reg["n_bins"].astype(np.int64),
                    "score": np.minimum(1000, np.round(10 * qv)).astype(np.int64),
                    "signal": lfc[s],
                    "pvalue": np.nan,
                    "qvalue": qv,
                    "summit": ((start[s] + end[s]) // 2 - reg["start"].to_numpy()).astype(np.int64),
                    "summit_bin": names[s].astype(str),
                    "direction": direction,
                }
            )
        )
    if not tables:
        return empty_region_table().assign(direction=pd.Series(dtype=np.int64))
    regions = pd.concat(tables, ignore_index=True)
    rank = {c: i for i, c in enumerate(pd.unique(chrom))}
    regions = regions.assign(_r=regions["chrom"].map(rank)).sort_values(["_r", "start"])
    regions = regions.drop(columns="_r").reset_index(drop=True)
    regions["name"] = [
        f"{label}_{'up' if d > 0 else 'down'}_{i + 1}" for i, d in enumerate(regions["direction"])
    ]
    return regions
