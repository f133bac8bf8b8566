"""Enriched regions: threshold per-bin q-values, merge neighbouring bins, score and summit.

Narrow calling keeps bins with q <= ``q`` and merges them across small gaps. Broad calling is
two-level like MACS3 ``callpeak --broad``: seed bins (q <= ``q``) are extended through
neighbouring bins at a weaker cutoff (q <= ``broad_q``), and a domain is kept only when it
holds a seed. Either mode can also test each region as a whole: the posterior probability that
the region's mean log fold enrichment exceeds ``min_lfe`` (``domain_q``), which removes short
background clusters that pass bin by bin but not as a region.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._bins import bin_coordinates, chrom_sizes, genomic_order, signal_frame
from .._errors import ChipviInputError
from .._posterior import POSTERIOR_KEY, enrichment_threshold, posterior_frame
from .._store import store
from ..io import BinStore, is_store, open_store

REGION_TABLE_COLUMNS = [
    "chrom", "start", "end", "name", "group", "n_bins", "score",
    "signal", "pvalue", "qvalue", "summit", "summit_bin",
]  # fmt: skip


_REGION_DTYPES = {
    "chrom": str, "start": np.int64, "end": np.int64, "name": str, "group": str,
    "n_bins": np.int64, "score": np.int64, "signal": np.float64, "pvalue": np.float64,
    "qvalue": np.float64, "summit": np.int64, "summit_bin": str,
}  # fmt: skip


def empty_region_table() -> pd.DataFrame:
    """A region table with no rows but the usual columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=_REGION_DTYPES[c]) for c in REGION_TABLE_COLUMNS})


def bayesian_qvalues(probability: np.ndarray) -> np.ndarray:
    """Bayesian FDR q-values from per-bin posterior probabilities of being called.

    Bins are ranked by decreasing probability; calling the top k has expected false discovery
    proportion ``mean(1 - p)`` over them. The q-value of a bin is the smallest such FDR over the
    sets that include it; bins with equal probabilities are in or out together (so genomic
    order never decides between tied bins). NaN probabilities get q = NaN.
    """
    p = np.asarray(probability, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return q
    order = ok[np.argsort(-p[ok], kind="stable")]
    fdr = np.cumsum(1.0 - p[order]) / np.arange(1, order.size + 1)
    # A set may only end at the last bin of a run of tied probabilities.
    ranked = p[order]
    tie_end = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1]
    group = np.searchsorted(tie_end, np.arange(ranked.size))
    q[order] = np.minimum.accumulate(fdr[tie_end][::-1])[::-1][group]
    return np.clip(q, 0.0, 1.0)


def bh_qvalues(pvalue: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values (NaN p-values are left out and stay NaN)."""
    p = np.asarray(pvalue, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order] * ok.size / np.arange(1, ok.size + 1)
    q[order] = np.minimum.accumulate(ranked[::-1])[::-1]
    return np.clip(q, 0.0, 1.0)


def merge_bins(
    called: np.ndarray, chrom: np.ndarray, start: np.ndarray, end: np.ndarray, merge_gap: int
) -> np.ndarray:
    """Region id per called bin (bins in genomic order); -1 for bins not called.

    Called bins on the same chromosome whose gap (next start − previous end, in bp) is at most
    ``merge_gap`` belong to one region.
    """
    ids = np.full(called.shape, -1, dtype=np.int64)
    idx = np.flatnonzero(called)
    if idx.size == 0:
        return ids
    new = np.ones(idx.size, dtype=bool)
    new[1:] = (chrom[idx[1:]] != chrom[idx[:-1]]) | (start[idx[1:]] - end[idx[:-1]] > merge_gap)
    ids[idx] = np.cumsum(new) - 1
    return ids


def regions_from_bins(
    called: np.ndarray,
    chrom: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    *,
    rank_value: np.ndarray,
    merge_gap: int,
    min_bins: int,
    bin_size: int,
    extra_min: dict[str, np.ndarray] | None = None,
    extra_mean: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Merge called bins (genomic order) into regions.

    Returns one row per region with ``chrom, start, end, n_bins`` (called bins), the indices of
    its first and last bin into the arrays (``first_index``, ``last_index``), the summit
    (called bin with the largest ``rank_value``: ``summit_index`` and ``summit_value``), and
    the per-region minimum / mean of the ``extra_*`` arrays over the called bins. Regions
    spanning fewer than ``min_bins`` bins are dropped.
    """
    ids = merge_bins(called, chrom, start, end, merge_gap)
    idx = np.flatnonzero(ids >= 0)
    cols = ["chrom", "start", "end", "n_bins", "first_index", "last_index", "summit_index",
            "summit_value"]  # fmt: skip
    if idx.size == 0:
        return pd.DataFrame(columns=cols + list(extra_min or {}) + list(extra_mean or {}))
    rid = ids[idx]
    first = np.r_[0, np.flatnonzero(np.diff(rid)) + 1]
    last = np.r_[first[1:], idx.size] - 1
    n_bins = last - first + 1
    # Summit: sort called bins by (region, -value) and take the first of each region.
    val = np.nan_to_num(rank_value[idx].astype(np.float64), nan=-np.inf)
    order = np.lexsort((-val, rid))
    summit = idx[order[first]]
    out = pd.DataFrame(
        {
            "chrom": chrom[idx[first]],
            "start": start[idx[first]],
            "end": end[idx[last]],
            "n_bins": n_bins,
            "first_index": idx[first],
            "last_index": idx[last],
            "summit_index": summit,
            "summit_value": rank_value[summit],
        }
    )
    for name, arr in (extra_min or {}).items():
        out[name] = np.fmin.reduceat(arr[idx].astype(np.float64), first)
    for name, arr in (extra_mean or {}).items():
        out[name] = np.add.reduceat(arr[idx].astype(np.float64), first) / n_bins
    span = np.ceil((out["end"] - out["start"]) / max(int(bin_size), 1)).astype(np.int64)
    return out[span.to_numpy() >= min_bins].reset_index(drop=True)


def link_seeds(
    seed: np.ndarray,
    link: np.ndarray,
    chrom: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    merge_gap: int,
) -> np.ndarray:
    """Two-level calling: the ``link`` bins of the linked stretches that contain a ``seed`` bin.

    Bins (genomic order) passing the weak cutoff (``link``; seeds count as passing) are merged
    across gaps of at most ``merge_gap`` bp; a stretch is kept when it holds at least one seed.
    Returns the called mask (``link`` bins of kept stretches).
    """
    link = link | seed
    ids = merge_bins(link, chrom, start, end, merge_gap)
    kept = np.unique(ids[seed & (ids >= 0)])
    return (ids >= 0) & np.isin(ids, kept)


def region_error_probability(
    first: np.ndarray, last: np.ndarray, lfe: np.ndarray, sd: np.ndarray, min_lfe: float
) -> np.ndarray:
    """Posterior probability that a region's mean log fold enrichment is at most ``min_lfe``.

    Regions span bins ``first..last`` (inclusive indices into genomic-order arrays), gap bins
    included. Each bin's log fold enrichment is taken as Gaussian (``lfe``, ``sd``) and
    independent of the others, so the region mean is Gaussian with mean ``mean(lfe)`` and
    standard deviation ``sqrt(sum(sd**2)) / n``. The chain posterior's neighbouring bins are
    positively correlated, so this understates the region mean's uncertainty (an
    approximation: it favours long regions). Bins with a NaN value are
    left out of the mean; a region without any finite bin gets 1.
    """
    from scipy.stats import norm

    ok = np.isfinite(lfe) & np.isfinite(sd)
    csum = np.r_[0.0, np.cumsum(np.where(ok, lfe, 0.0))]
    cvar = np.r_[0.0, np.cumsum(np.where(ok, sd, 0.0) ** 2)]
    cnt = np.r_[0, np.cumsum(ok)]
    n = cnt[last + 1] - cnt[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (csum[last + 1] - csum[first]) / n
        scale = np.sqrt(cvar[last + 1] - cvar[first]) / n
    err = norm.cdf(min_lfe, loc=mean, scale=np.maximum(scale, 1e-12))
    return np.where(n > 0, err, 1.0)


def _posterior_inputs(adata, level, min_lfe, posterior_key, need_posterior):
    """``(qvalues, signal, lfe, sd)`` frames from the keys ``model.add_posterior`` wrote."""
    from scipy.stats import norm

    def get(kind):
        return posterior_frame(adata, kind, level, key=posterior_key)

    lfe = sd = None
    # Posterior probability that the log fold enrichment exceeds min_lfe: as stored at the
    # model's own threshold, else from the posterior mean and sd.
    if np.isclose(min_lfe, enrichment_threshold(adata, posterior_key)):
        prob = get("probability_enriched")
    else:
        lfe, sd = get("log_fold_enrichment"), get("sd")
        prob = pd.DataFrame(
            norm.sf(min_lfe, loc=lfe.to_numpy(), scale=np.maximum(sd.to_numpy(), 1e-12)),
            index=lfe.index, columns=lfe.columns,
        )  # fmt: skip
    if need_posterior and lfe is None:
        lfe, sd = get("log_fold_enrichment"), get("sd")
    return _bayesian_q(prob), get("fold_enrichment"), lfe, sd


def _bayesian_q(prob: pd.DataFrame) -> pd.DataFrame:
    values = (
        np.column_stack([bayesian_qvalues(prob[c].to_numpy()) for c in prob.columns])
        if prob.shape[1]
        else np.zeros((len(prob), 0))
    )
    return pd.DataFrame(values, index=prob.index, columns=prob.columns)


#: Broad-domain calling (the MACS3 ``--broad`` analogue): the setting chosen on the tuning seed
#: of ``benchmarks/bench_peaks.py``; ``chipvi call --format broadPeak`` uses it.
BROAD_DOMAINS: dict[str, float] = {"broad_q": 0.2, "merge_gap": 1000, "domain_q": 0.05}


def call_enriched_regions(
    adata: AnnData | BinStore,
    *,
    level: Literal["group", "library", "library_own"] = "group",
    min_lfe: float = 0.5,
    posterior_key: str = POSTERIOR_KEY,
    key: str | None = None,
    kind: Literal["qvalue", "probability"] = "qvalue",
    signal_key: str | None = None,
    pvalue_key: str | None = None,
    lfe_key: str | None = None,
    sd_key: str | None = None,
    groups: Sequence[str] | str | None = None,
    q: float = 0.05,
    min_bins: int = 1,
    merge_gap: int = 0,
    broad_q: float | None = None,
    domain_q: float | None = None,
    key_added: str | None = "chipvi_regions",
) -> pd.DataFrame:
    """Call enriched regions: bins with q ≤ ``q``, merged, scored, with a summit bin.

    By default the per-bin values are the posterior that ``model.add_posterior(adata)`` wrote:
    the probability that the group's (or library's) natural-log fold enrichment exceeds
    ``min_lfe``, turned into Bayesian-FDR q-values; the signal is the posterior fold
    enrichment. ``key=`` calls on any other per-bin values instead.

    Narrow mode (default) calls the bins with q ≤ ``q`` and merges them across gaps of at most
    ``merge_gap``. Broad mode (``broad_q``), the analogue of MACS3 ``callpeak --broad``, uses
    them as seeds and extends them through neighbouring bins with q ≤ ``broad_q``: stretches
    of such bins (merged across ``merge_gap``) become domains when they hold a seed.
    ``domain_q`` then tests each region as a whole (see below).

    Parameters
    ----------
    adata
        AnnData in the chipvi layout. Results are stored there. Or a bins store
        (:func:`chipvi.io.open_store`, or its path) after ``model.add_posterior(store)``:
        called a chromosome at a time with the same q-values (two passes over the store's
        probabilities, keeping only those that can pass the cutoff), posterior keys only
        (no ``key=``), nothing stored (``key_added`` is not used).
    level
        ``"group"`` (one set of regions per group, its replicates as joint evidence),
        ``"library"`` or ``"library_own"`` (each library's own reads); with ``key``, only
        whether the values are in ``obsm`` (group) or ``layers``.
    min_lfe
        Natural-log fold enrichment a bin must exceed (posterior values; with ``key`` only
        for ``domain_q``). At the model's ``enrichment_threshold`` the stored
        ``probability_enriched`` is used, else the posterior mean and sd.
    posterior_key
        ``uns`` key of the posterior record (``add_posterior``'s ``f"{prefix}_posterior"``).
    key
        Call on these values instead: per-bin q-values (``kind="qvalue"``) or posterior
        probabilities of enrichment (``kind="probability"``, turned into Bayesian-FDR
        q-values) in ``adata.obsm[key]`` (``level="group"``, columns = groups) or
        ``adata.layers[key]`` (library levels).
    kind
        What ``key`` holds.
    signal_key
        With ``key``: optional signal (e.g. fold enrichment) at the same level; it picks the
        summit (largest value) and gives ``signal`` (value at the summit). Without it the
        summit is the bin with the smallest q-value and ``signal`` is -log10 q there.
    pvalue_key
        With ``key``: optional per-bin p-values (reported as -log10 of the region minimum).
    lfe_key, sd_key
        With ``key`` and ``domain_q``: posterior mean and standard deviation of the per-bin
        natural-log fold enrichment at the same level.
    groups
        Restrict to these groups (or libraries).
    q
        q-value threshold per bin.
    min_bins
        Drop regions spanning fewer bins than this.
    merge_gap
        Merge called bins whose gap is at most this many bp (0: only adjacent bins). In broad
        mode this is the largest gap bridged between linked bins.
    broad_q
        Broad mode: the weaker per-bin q-value cutoff (≥ ``q``) through which seeds are
        extended, like MACS3's ``--broad-cutoff``. ``None`` (default): narrow mode.
    domain_q
        Keep only regions whose posterior probability that the mean log fold enrichment over
        the whole region (gap bins included) is at most ``min_lfe`` is ≤ ``domain_q``. Bins are
        taken as independent Gaussians, so a long domain of moderate enrichment passes while a
        short background cluster must be strongly enriched to pass.
    key_added
        Store ``{"params": ..., "regions": table}`` in ``adata.uns[key_added]`` (``None``:
        store nothing).

    Returns
    -------
    pandas.DataFrame
        One row per region: ``chrom, start, end`` (0-based half-open), ``name``, ``group``,
        ``n_bins`` (called bins), ``score`` (0–1000, ``min(1000, round(-10 log10 q_min))``),
        ``signal``, ``pvalue`` and ``qvalue`` (-log10 of the region's smallest value; NaN when
        unknown), ``summit`` (offset of the summit bin's centre from ``start``), ``summit_bin``
        (its obs name). Sorted by group, chromosome and start. In broad mode ``n_bins`` counts
        the bins at the weak cutoff and ``qvalue`` is the strongest seed's.

    Examples
    --------
    After ``model.add_posterior(adata)``; broad domains (H3K27me3, H3K36me3), with the
    setting chosen on the simulator::

        chipvi.tl.call_enriched_regions(adata, broad_q=0.2, merge_gap=1000, domain_q=0.05)
        chipvi.io.write_peaks(adata, "domains/", format="broadPeak")
    """
    if is_store(adata):
        adata = open_store(adata)
    elif not isinstance(adata, AnnData):
        raise ChipviInputError(
            f"call_enriched_regions takes an AnnData or a bins store, got "
            f"{type(adata).__name__}: run model.add_posterior(adata) and pass adata."
        )
    if not 0 < q <= 1:
        raise ChipviInputError(f"q must be in (0, 1], got {q}.")
    if int(min_bins) < 1 or int(merge_gap) < 0:
        raise ChipviInputError("min_bins must be >= 1 and merge_gap >= 0.")
    if level not in ("group", "library", "library_own"):
        raise ChipviInputError(f"level must be 'group', 'library' or 'library_own', not {level!r}.")
    if kind not in ("qvalue", "probability"):
        raise ChipviInputError(f"kind must be 'qvalue' or 'probability', not {kind!r}.")
    if broad_q is not None and not q <= broad_q <= 1:
        raise ChipviInputError(
            f"broad_q must be between q ({q}) and 1 (the weaker, linking cutoff), got {broad_q}."
        )
    if domain_q is not None and not 0 < domain_q <= 1:
        raise ChipviInputError(f"domain_q must be in (0, 1], got {domain_q}.")

    if isinstance(adata, BinStore):
        from ._regions_store import call_store_regions

        result = call_store_regions(
            adata, level=level, min_lfe=min_lfe, posterior_key=posterior_key, key=key,
            groups=groups, q=q, min_bins=min_bins, merge_gap=merge_gap, broad_q=broad_q,
            domain_q=domain_q,
        )  # fmt: skip
        _warn_if_empty(result, q, key, min_lfe)
        return result
    # score -> threshold -> merge -> annotate
    if key is None:
        pv = None
        qv, sig, lfe, sd = _posterior_inputs(
            adata, level, float(min_lfe), posterior_key, domain_q is not None
        )
    else:
        qv, pv, sig, lfe, sd = _key_inputs(
            adata, key, kind, signal_key, pvalue_key, lfe_key, sd_key, level, domain_q
        )
    columns = _columns(qv, (pv, sig, lfe, sd), groups, level)
    sizes = chrom_sizes(adata)
    order = genomic_order(adata, sizes)
    chrom, start, end = (a[order] for a in bin_coordinates(adata))
    bin_size = int(
        adata.uns["chipvi"].get("bin_size", int(np.median(end - start)) if len(end) else 1)
    )
    obs_names = np.asarray(adata.obs_names)[order]

    def column(frame, col):
        return None if frame is None else frame[col].to_numpy(dtype=np.float64)[order]

    tables = []
    for col in columns:
        reg = _threshold_and_merge(
            column(qv, col), column(pv, col), column(sig, col), chrom, start, end,
            q=q, broad_q=broad_q, merge_gap=int(merge_gap), min_bins=int(min_bins),
            bin_size=bin_size,
        )  # fmt: skip
        if not reg.empty and domain_q is not None:
            err = region_error_probability(
                reg["first_index"].to_numpy(), reg["last_index"].to_numpy(),
                column(lfe, col), column(sd, col), float(min_lfe),
            )  # fmt: skip
            reg = reg[err <= domain_q].reset_index(drop=True)
        if not reg.empty:
            tables.append(_annotate(reg, col, start, end, obs_names))
    result = pd.concat(tables, ignore_index=True) if tables else empty_region_table()
    _warn_if_empty(result, q, key, min_lfe)
    params = {
        "source": f"uns[{posterior_key!r}]" if key is None else key,
        "kind": "probability" if key is None else kind,
        "level": level, "q": float(q), "min_bins": int(min_bins), "merge_gap": int(merge_gap),
        "broad_q": broad_q, "domain_q": domain_q, "min_lfe": float(min_lfe),
    }  # fmt: skip
    store(adata, key_added, params, regions=result)
    return result


def _warn_if_empty(result: pd.DataFrame, q: float, key, min_lfe: float) -> None:
    if not len(result):
        warnings.warn(
            f"call_enriched_regions found no region with q <= {q}"
            + (f" and posterior log fold enrichment above {min_lfe}" if key is None else "")
            + ": relax q or min_lfe, check that the model was trained long enough (its ELBO "
            "history levelled off).",
            UserWarning,
            stacklevel=3,
        )


def _key_inputs(adata, key, kind, signal_key, pvalue_key, lfe_key, sd_key, level, domain_q):
    """Per-bin inputs of a call on stored values: ``(qvalues, pvalues, signal, lfe, sd)``."""

    def read(name: str | None) -> pd.DataFrame | None:
        if name is None:
            return None
        if level == "group":
            return signal_frame(adata, key=name)
        return signal_frame(adata, layer=name)

    qv = read(key)
    if kind == "probability":
        qv = _bayesian_q(qv)
    if domain_q is not None and (lfe_key is None or sd_key is None):
        raise ChipviInputError(
            "domain_q with key= needs the posterior of the log fold enrichment: pass lfe_key= "
            "and sd_key= (posterior mean and sd at the level of key), or call on the posterior "
            "that model.add_posterior(adata) wrote (no key=)."
        )
    lfe = read(lfe_key) if domain_q is not None else None
    sd = read(sd_key) if domain_q is not None else None
    return qv, read(pvalue_key), read(signal_key), lfe, sd


def _columns(qv, others, groups, level) -> list:
    """The columns to call (all, or ``groups``), present in every optional input."""
    columns = list(qv.columns)
    if groups is not None:
        wanted = [groups] if isinstance(groups, str) else list(groups)
        unknown = [g for g in wanted if g not in columns]
        if unknown:
            raise ChipviInputError(f"Unknown {level}(s) {unknown}; available: {columns}.")
        columns = wanted
    labels = ("pvalue_key", "signal_key", "lfe_key", "sd_key")
    for other, label in zip(others, labels, strict=True):
        if other is not None and [c for c in columns if c not in other.columns]:
            raise ChipviInputError(
                f"{label} lacks columns {columns}; it has {list(other.columns)}."
            )
    return columns


def _threshold_and_merge(qcol, pcol, signal, chrom, start, end, *, q, broad_q, merge_gap,
                         min_bins, bin_size) -> pd.DataFrame:  # fmt: skip
    """Bins at ``q`` (linked through ``broad_q`` bins in broad mode), merged into regions."""
    called = np.nan_to_num(qcol, nan=1.0 + q) <= q
    if broad_q is not None:
        weak = np.nan_to_num(qcol, nan=2.0) <= broad_q
        called = link_seeds(called, weak, chrom, start, end, merge_gap)
    neglog_q = -np.log10(np.clip(qcol, 1e-300, 1.0))
    rank = signal if signal is not None else neglog_q
    extra = {"_qmin": qcol}
    if pcol is not None:
        extra["_pmin"] = pcol
    return regions_from_bins(
        called, chrom, start, end, rank_value=rank, merge_gap=merge_gap,
        min_bins=min_bins, bin_size=bin_size, extra_min=extra,
    )  # fmt: skip


def _annotate(reg: pd.DataFrame, col, start, end, obs_names) -> pd.DataFrame:
    """The region table of one column (narrowPeak fields, summit, -log10 p and q)."""
    s_idx = reg["summit_index"].to_numpy()
    qvalue = -np.log10(np.clip(reg["_qmin"].to_numpy(), 1e-300, 1.0))
    return pd.DataFrame(
        {
            "chrom": reg["chrom"].astype(str),
            "start": reg["start"].astype(np.int64),
            "end": reg["end"].astype(np.int64),
            "name": [f"{col}_region_{i + 1}" for i in range(len(reg))],
            "group": str(col),
            "n_bins": reg["n_bins"].astype(np.int64),
            "score": np.minimum(1000, np.round(10 * qvalue)).astype(np.int64),
            "signal": reg["summit_value"].astype(np.float64),
            "pvalue": -np.log10(np.clip(reg["_pmin"].to_numpy(), 1e-300, 1.0))
            if "_pmin" in reg else np.nan,
            "qvalue": qvalue,
            "summit": ((start[s_idx] + end[s_idx]) // 2 - reg["start"].to_numpy()).astype(np.int64),
            "summit_bin": obs_names[s_idx].astype(str),
        }
    )  # fmt: skip
