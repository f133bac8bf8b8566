"""Differential enrichment between two groups from posterior draws of the log fold enrichment.

The scvi-tools ``differential_expression`` analogue for bins: for each bin, the posterior of
``lfc = z_group1 − z_group2`` (natural log) is summarised by its mean, median and sd, and by the
probability that it exceeds ``delta`` in either direction. Bins are called differential by
Bayesian FDR control on that probability (expected share of false calls ≤ ``fdr``), then
neighbouring bins with the same direction are merged into regions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._bins import bin_coordinates, genomic_order
from .._errors import ChipviInputError
from ._regions import bayesian_qvalues, empty_region_table, regions_from_bins


def _check_groups(model: Any, group1: str, group2: str | None) -> list[str]:
    names = [str(g) for g in model.group_names]
    for g in [group1] + ([group2] if group2 is not None else []):
        if g not in names:
            raise ChipviInputError(f"Unknown group {g!r}; the model's groups are {names}.")
    if group1 == group2:
        raise ChipviInputError("group1 and group2 must differ.")
    if group2 is None and len(names) < 2:
        raise ChipviInputError("Differential enrichment needs at least two groups.")
    return names


def differential_enrichment(
    model: Any,
    group1: str,
    group2: str | None = None,
    *,
    adata: AnnData | None = None,
    delta: float = 0.5,
    fdr: float = 0.05,
    n_samples: int = 100,
    merge_gap: int = 0,
    min_bins: int = 1,
    chunk_size: int = 20_000,
    batch_size: int | None = None,
    key_added: str | None = "chipvi_differential",
) -> pd.DataFrame:
    """Per-bin differential enrichment between two groups, with merged differential regions.

    Parameters
    ----------
    model
        A trained :class:`chipvi.ChIPVI` (uses ``sample_log_fold_enrichment(level="group")`` and
        ``group_names``).
    group1, group2
        Groups to compare (``lfc = group1 − group2``). ``group2=None`` compares with the mean of
        all other groups ("rest").
    adata
        AnnData to evaluate (default the model's). Results are stored there.
    delta
        Smallest absolute lfc (natural log) that counts as a change; 0.5 ≈ 1.65-fold.
    fdr
        Target Bayesian false discovery rate for calling bins.
    n_samples
        Posterior draws per bin.
    merge_gap, min_bins
        Region merging as in :func:`chipvi.tl.call_enriched_regions`.
    chunk_size
        Bins per posterior sampling chunk (bounds memory at ``n_samples × chunk × groups``).
    batch_size
        Minibatch size for the model.
    key_added
        Store the per-bin table in ``adata.obsm[key_added]`` and the regions in
        ``adata.uns[key_added]`` (``None``: store nothing).

    Returns
    -------
    pandas.DataFrame
        Index ``obs_names``; columns ``lfe1``, ``lfe2`` (posterior mean log fold enrichment of each
        side), ``lfc_mean``, ``lfc_median``, ``lfc_sd``, ``prob_up`` (P(lfc > delta)),
        ``prob_down`` (P(lfc < −delta)), ``prob_change`` (their sum), ``qvalue`` (Bayesian FDR of
        calling the bin), ``is_differential`` (``qvalue ≤ fdr``) and ``direction`` (+1 when
        group1 is higher, −1 when lower, 0 when not called).
    """
    names = _check_groups(model, group1, group2)
    if not delta >= 0:
        raise ChipviInputError(f"delta must be >= 0, got {delta}.")
    if not 0 < fdr < 1:
        raise ChipviInputError(f"fdr must be in (0, 1), got {fdr}.")
    if int(n_samples) < 2:
        raise ChipviInputError(f"n_samples must be >= 2, got {n_samples}.")
    adata = adata if adata is not None else model.adata
    i1 = names.index(group1)
    others = (
        [names.index(group2)] if group2 is not None else [i for i in range(len(names)) if i != i1]
    )
    n = adata.n_obs
    cols = {k: np.empty(n) for k in ("lfe1", "lfe2", "lfc_mean", "lfc_median", "lfc_sd")}
    cols.update({k: np.empty(n) for k in ("prob_up", "prob_down")})
    for lo in range(0, n, int(chunk_size)):
        idx = np.arange(lo, min(n, lo + int(chunk_size)))
        draws = np.asarray(
            model.sample_log_fold_enrichment(
                adata=adata,
                indices=idx,
                level="group",
                n_samples=int(n_samples),
                batch_size=batch_size,
            ),  # fmt: skip
            dtype=np.float64,
        )
        z1 = draws[:, :, i1]
        z2 = draws[:, :, others].mean(axis=2)
        lfc = z1 - z2
        cols["lfe1"][idx] = z1.mean(0)
        cols["lfe2"][idx] = z2.mean(0)
        cols["lfc_mean"][idx] = lfc.mean(0)
        cols["lfc_median"][idx] = np.median(lfc, axis=0)
        cols["lfc_sd"][idx] = lfc.std(0)
        cols["prob_up"][idx] = (lfc > delta).mean(0)
        cols["prob_down"][idx] = (lfc < -delta).mean(0)
    table = pd.DataFrame(cols, index=adata.obs_names)
    table["prob_change"] = table["prob_up"] + table["prob_down"]
    table["qvalue"] = bayesian_qvalues(table["prob_change"].to_numpy())
    table["is_differential"] = table["qvalue"] <= fdr
    table["direction"] = np.where(
        table["is_differential"], np.where(table["prob_up"] >= table["prob_down"], 1, -1), 0
    ).astype(np.int8)
    regions = differential_regions(
        adata,
        table,
        label=f"{group1}_vs_{group2 or 'rest'}",
        merge_gap=merge_gap,
        min_bins=min_bins,
        q_floor=1.0 / int(n_samples),
    )
    if key_added is not None:
        adata.obsm[key_added] = table
        adata.uns[key_added] = regions
        adata.uns[f"{key_added}_params"] = {
            "group1": group1,
            "group2": group2 or "rest",
            "delta": float(delta),
            "fdr": float(fdr),
            "n_samples": int(n_samples),
        }
    return table


def differential_regions(
    adata: AnnData,
    table: pd.DataFrame,
    *,
    label: str,
    merge_gap: int = 0,
    min_bins: int = 1,
    q_floor: float = 1e-300,
) -> pd.DataFrame:
    """Merge called bins of a differential table into regions, separately per direction.

    Returns the region table of :func:`chipvi.tl.call_enriched_regions` (``group`` = ``label``,
    ``signal`` = posterior mean lfc at the summit, the bin with the largest absolute lfc) plus a
    ``direction`` column. Reported q-values are at least ``q_floor`` (with S posterior draws a
    Monte-Carlo q-value of 0 only means "below 1/S").
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
        qv = -np.log10(np.clip(reg["_q"].to_numpy(), q_floor, 1.0))
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
