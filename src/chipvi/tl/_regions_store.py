"""Enriched regions of a bins store: the calls of :func:`chipvi.tl.call_enriched_regions`, read
a chromosome at a time.

Bayesian-FDR q-values need the whole genome's posterior probabilities, but not at once: the
bins ranked by decreasing probability have ever larger ``1 - p``, so the running mean of
``1 - p`` (the FDR of calling the top k) never decreases with k, and a bin's q-value is the
FDR of the set of all bins at least as probable, ``q(p) = sum(1 - p_i : p_i >= p) / #(p_i >=
p)``. A first pass counts ``1 - p`` in fine probability bins; every bin below the lowest one
whose set can reach the loosest cutoff has q above it. A second pass keeps the probabilities
above that bound (the candidates: about the called bins) and computes their q-values exactly,
as in memory. Regions never span chromosomes, so they are then called a chromosome at a time
with the in-memory code: memory is set by the largest chromosome and the candidates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import ChipviInputError
from .._posterior import DERIVED, enrichment_threshold, posterior_location
from ._regions import _annotate, _threshold_and_merge, empty_region_table, region_error_probability

#: Probability bins of the first pass (the second keeps at most about one bin's worth more
#: than the bins that can be called).
_BINS = 1 << 16


class _Posterior:
    """Blocks of one store's posterior at one level (bins × columns)."""

    def __init__(self, store, level: str, min_lfe: float, posterior_key: str) -> None:
        self.store, self.level, self.key = store, level, posterior_key
        self.columns = self._columns()
        self.min_lfe = min_lfe
        # At the model's own threshold the stored probability; else from the mean and sd.
        self.stored = np.isclose(min_lfe, enrichment_threshold(store, posterior_key))

    def _columns(self) -> list[str]:
        slot, name = posterior_location(self.store, "log_fold_enrichment", self.level, self.key)
        if slot == "obsm":
            return [str(c) for c in self.store.obsm(name, 0, 0).columns]
        return [str(c) for c in self.store.var.index]

    def read(self, kind: str, a: int, b: int) -> np.ndarray:
        slot, name = posterior_location(self.store, DERIVED.get(kind, kind), self.level, self.key)
        if slot == "obsm":
            values = self.store.obsm(name, a, b)[self.columns].to_numpy(np.float64)
        else:
            values = self.store.array(name, a, b).astype(np.float64)
        return np.exp(values) if kind in DERIVED else values

    def probability(self, a: int, b: int) -> np.ndarray:
        if self.stored:
            return self.read("probability_enriched", a, b)
        from scipy.stats import norm

        lfe, sd = self.read("log_fold_enrichment", a, b), self.read("sd", a, b)
        return norm.sf(self.min_lfe, loc=lfe, scale=np.maximum(sd, 1e-12))


def _qvalue_tables(post: _Posterior, q_max: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per column ``(values, qvalues)``: the distinct probabilities (ascending) whose q-value
    can be at most ``q_max``, and their q-values (as :func:`bayesian_qvalues` on all bins)."""
    store, n_cols = post.store, len(post.columns)
    blocks = [(a, min(a + store.chunk, store.n_obs)) for a in range(0, store.n_obs, store.chunk)]
    counts = np.zeros((n_cols, _BINS))
    sums = np.zeros((n_cols, _BINS))
    for a, b in blocks:
        p = post.probability(a, b)
        for j in range(n_cols):
            pj = p[:, j][~np.isnan(p[:, j])]
            k = np.clip((pj * _BINS).astype(np.int64), 0, _BINS - 1)
            counts[j] += np.bincount(k, minlength=_BINS)
            sums[j] += np.bincount(k, weights=1.0 - pj, minlength=_BINS)
    lows = []
    for j in range(n_cols):
        # FDR of the set {p >= bin's lower edge}, from the top bin down (never decreasing).
        n, s = np.cumsum(counts[j][::-1])[::-1], np.cumsum(sums[j][::-1])[::-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = np.flatnonzero((n > 0) & (s / np.maximum(n, 1) <= q_max))
        first = ok[0] if ok.size else _BINS - 1
        lows.append(max(first - 1, 0) / _BINS)  # a threshold inside the bin below may reach it
    kept: list[list[np.ndarray]] = [[] for _ in range(n_cols)]
    for a, b in blocks:
        p = post.probability(a, b)
        for j in range(n_cols):
            kept[j].append(p[:, j][p[:, j] >= lows[j]])
    tables = []
    for j in range(n_cols):
        # Descending, as bayesian_qvalues ranks.
        ranked = -np.sort(-np.concatenate([np.empty(0), *kept[j]]))
        fdr = np.cumsum(1.0 - ranked) / np.arange(1, ranked.size + 1)
        tie_end = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1]
        values, qvalues = ranked[tie_end][::-1], np.clip(fdr[tie_end], 0.0, 1.0)[::-1]
        tables.append((values, qvalues))
    return tables


def _qvalues(p: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """q-values of probabilities ``p`` from a column's table; NaN where not in it (q above
    every cutoff, or p NaN)."""
    values, qvalues = table
    q = np.full(p.shape, np.nan)
    if not values.size:
        return q
    i = np.clip(np.searchsorted(values, p), 0, values.size - 1)
    hit = values[i] == p
    q[hit] = qvalues[i[hit]]
    return q


class _Names:
    """Bin names of a chromosome's rows, read from the store only where indexed (summits)."""

    def __init__(self, store, offset: int) -> None:
        self.store, self.offset = store, offset

    def __getitem__(self, index) -> np.ndarray:
        return self.store.names_at(self.offset + np.asarray(index))


def call_store_regions(store, *, level, min_lfe, posterior_key, key, groups, q, min_bins,
                       merge_gap, broad_q, domain_q) -> pd.DataFrame:  # fmt: skip
    """:func:`chipvi.tl.call_enriched_regions` of a bins store (its arguments, checked)."""
    if key is not None:
        raise ChipviInputError(
            f"{store.path}: a bins store is called on the posterior that model.add_posterior"
            "(store) wrote; key= works on an in-memory AnnData."
        )
    post = _Posterior(store, level, float(min_lfe), posterior_key)
    columns = post.columns
    if groups is not None:
        wanted = [groups] if isinstance(groups, str) else [str(g) for g in groups]
        unknown = [g for g in wanted if g not in columns]
        if unknown:
            raise ChipviInputError(f"Unknown {level}(s) {unknown}; available: {columns}.")
        columns = wanted
    index = [post.columns.index(c) for c in columns]
    tables = _qvalue_tables(post, max(q, broad_q or 0.0))
    found: dict[str, list[pd.DataFrame]] = {c: [] for c in columns}
    for _, a, b in store.chrom_ranges():
        obs = store.obs(a, b, names=False)
        chrom = obs["chrom"].astype(str).to_numpy()
        start, end = obs["start"].to_numpy(np.int64), obs["end"].to_numpy(np.int64)
        p, signal = post.probability(a, b), post.read("fold_enrichment", a, b)
        lfe = sd = None
        if domain_q is not None:
            lfe, sd = post.read("log_fold_enrichment", a, b), post.read("sd", a, b)
        for col, j in zip(columns, index, strict=True):
            reg = _threshold_and_merge(
                _qvalues(p[:, j], tables[j]), None, signal[:, j], chrom, start, end, q=q,
                broad_q=broad_q, merge_gap=int(merge_gap), min_bins=int(min_bins),
                bin_size=store.bin_size,
            )  # fmt: skip
            if not reg.empty and domain_q is not None:
                err = region_error_probability(
                    reg["first_index"].to_numpy(), reg["last_index"].to_numpy(), lfe[:, j],
                    sd[:, j], float(min_lfe),
                )  # fmt: skip
                reg = reg[err <= domain_q].reset_index(drop=True)
            if not reg.empty:
                found[col].append(_annotate(reg, col, start, end, _Names(store, a)))
    result = []
    for col, parts in found.items():
        if parts:
            table = pd.concat(parts, ignore_index=True)
            table["name"] = [f"{col}_region_{i + 1}" for i in range(len(table))]
            result.append(table)
    return pd.concat(result, ignore_index=True) if result else empty_region_table()
