"""Quality control: replicate concordance, fingerprint (deepTools/CHANCE metrics), FRiP."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from .._bins import overlapping_bins
from .._blocks import Blocks, Moments
from .._errors import ChipviInputError
from .._store import store, stored
from ..io import BinStore, read_regions
from ._stream import MAX_DISTINCT, Sample, SpilledRanks, ValueTable, top_threshold


def _library_groups(var: pd.DataFrame, groups: Sequence[str] | str | None) -> dict[str, list[str]]:
    if "group" not in var:
        raise ChipviInputError("var has no 'group' column; build the bins with read_bams.")
    names = var.index.astype(str)
    by_group = {
        str(g): list(names[var["group"].astype(str) == g])
        for g in pd.unique(var["group"].astype(str))
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


def _finite_pairs(values: np.ndarray, pairs: list[tuple[int, int]]):
    """Per pair ``(x, y)``: the two columns where both are finite."""
    for i, j in pairs:
        x, y = values[:, i], values[:, j]
        ok = np.isfinite(x) & np.isfinite(y)
        yield (x, y) if ok.all() else (x[ok], y[ok])


def _pair_metrics(bins: Blocks, read, pairs: list[tuple[int, int]], k: int) -> list[dict]:
    """Pearson, Spearman (mid-ranks) and top-k Jaccard of column pairs of ``read(a, b)``,
    over the bins where both are finite, a block at a time (see :mod:`._stream`).

    Passes: moments and value tables; for columns whose table overflowed, bucket counts and
    their values to disk (:class:`._stream.SpilledRanks`); the values of the bucket holding a
    k-th largest value (when not a bucket of one value); ranks and top-k membership (the top
    k: larger values, then ties in bin order).
    """
    cap = None if bins.store is None else MAX_DISTINCT
    moments = [Moments() for _ in pairs]
    tables = [[ValueTable(cap), ValueTable(cap)] for _ in pairs]
    samples = [[Sample(), Sample()] for _ in pairs] if cap is not None else None
    for a, b in bins.ranges:
        for p, (x, y) in enumerate(_finite_pairs(read(a, b), pairs)):
            moments[p].add(x, y)
            for side, col in enumerate((x, y)):
                tables[p][side].add(col)
                if samples is not None:
                    samples[p][side].add(col)
    rankers = [[t.finish() for t in pair] for pair in tables]
    spilled = [(p, s) for p in range(len(pairs)) for s in (0, 1) if tables[p][s].overflow]
    with contextlib.ExitStack() as stack:
        if spilled:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chipvi-ranks-")))
        for p, s in spilled:
            rankers[p][s] = SpilledRanks(samples[p][s].values(), moments[p].n, folder / f"{p}_{s}",
                                         MAX_DISTINCT)  # fmt: skip
        if spilled:
            for a, b in bins.ranges:
                cols = list(_finite_pairs(read(a, b), pairs))
                for p, s in spilled:
                    rankers[p][s].add(cols[p][s])
            for p, s in spilled:
                rankers[p][s].finish()
        return _ranked_metrics(bins, read, pairs, k, moments, rankers)


def _ranked_metrics(bins, read, pairs, k, moments, rankers) -> list[dict]:
    """:func:`_pair_metrics` once every column has its ranker: the top k, then the ranks."""
    # The k-th largest value of each column (its top k: larger values, then `quota` ties).
    tops: dict[tuple[int, int], list] = {}
    gather: dict[tuple[int, int], tuple[int, ValueTable]] = {}
    for p in range(len(pairs)):
        kk = min(k, moments[p].n)
        for s in (0, 1):
            r = rankers[p][s]
            if kk == 0:
                continue
            if not isinstance(r, SpilledRanks):
                i, quota = top_threshold(r.values, r.counts, kk)
                tops[p, s] = [r.values[i], quota]
                continue
            code, quota = top_threshold(np.arange(r.counts.size), r.counts, kk)
            if code % 2:  # a bucket of one value
                tops[p, s] = [r.edges[code // 2], quota]
            else:
                gather[p, s] = (code, ValueTable())
                tops[p, s] = [None, quota]
    if gather:
        for a, b in bins.ranges:
            cols = list(_finite_pairs(read(a, b), pairs))
            for (p, s), (code, table) in gather.items():
                col = cols[p][s]
                table.add(col[rankers[p][s].codes(col) == code])
        for (p, s), (_, table) in gather.items():
            table.finish()
            i, quota = top_threshold(table.values, table.counts, tops[p, s][1])
            tops[p, s] = [table.values[i], quota]
    rank_moments = [Moments() for _ in pairs]
    shared = np.zeros(len(pairs), dtype=np.int64)
    seen = {key: 0 for key in tops}  # ties at the threshold met so far, in bin order
    start = np.zeros(len(pairs), dtype=np.int64)  # each pair's values read so far
    for a, b in bins.ranges:
        for p, (x, y) in enumerate(_finite_pairs(read(a, b), pairs)):
            rank_moments[p].add(rankers[p][0].rank(x, start[p]), rankers[p][1].rank(y, start[p]))
            start[p] += x.size
            if (p, 0) not in tops:
                continue
            top = []
            for s, col in enumerate((x, y)):
                t, quota = tops[p, s]
                tie = col == t
                order = seen[p, s] + np.cumsum(tie)
                seen[p, s] += int(tie.sum())
                top.append((col > t) | (tie & (order <= quota)))
            shared[p] += int(np.count_nonzero(top[0] & top[1]))
    rows = []
    for p in range(len(pairs)):
        kk = min(k, moments[p].n)
        constant = moments[p].constant
        rows.append({
            "pearson": moments[p].pearson(),
            "spearman": np.nan if constant else rank_moments[p].pearson(),
            "jaccard": shared[p] / (2 * kk - shared[p]) if kk else np.nan,
        })  # fmt: skip
    return rows


def replicate_concordance(
    adata: AnnData | BinStore | str | os.PathLike,
    *,
    layer: str | None = None,
    denoised: str | pd.DataFrame | None = None,
    groups: Sequence[str] | str | None = None,
    top_k: int | float = 0.05,
    key_added: str | None = "chipvi_concordance",
) -> pd.DataFrame:
    """Agreement between replicates of each group, raw and denoised side by side.

    For every pair of libraries in a group: Pearson and Spearman correlation over bins and the
    Jaccard index of their top-k bins (ties at the k-th value taken in bin order).

    A bins store is read a chunk at a time, with the numbers of the same bins in memory:
    Pearson from merged centred sums; Spearman and the top k from the distinct values and their
    counts (raw counts have few). A column of more than 2^20 distinct values (a continuous
    posterior of a large store) is ranked exactly through temporary files (in ``$TMPDIR``,
    about 32 bytes per bin and such column, removed at the end): memory stays bounded, at the
    cost of two more passes over the store.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout (``var['group']`` defines the replicates), or a bins store
        (:func:`chipvi.io.open_store` or its path).
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
        not store). For a bins store: in the open store's ``uns`` in memory only, the store on
        disk is not changed (as :func:`call_enriched_regions` leaves it).

    Returns
    -------
    pandas.DataFrame
        One row per replicate pair: ``group``, ``library_1``, ``library_2``, then
        ``pearson_raw, spearman_raw, jaccard_raw`` and, with ``denoised``, the same three with
        the ``_denoised`` suffix.
    """
    bins = Blocks(adata)
    by_group = _library_groups(bins.var, groups)
    k = _top_k(bins.n_obs, top_k)
    names = bins.var_names
    pairs = [(g, a, b) for g, libs in by_group.items() for a, b in itertools.combinations(libs, 2)]
    if not pairs:
        raise ChipviInputError(
            "No group has two or more libraries; replicate concordance needs replicates."
        )
    index = [(names.index(a), names.index(b)) for _, a, b in pairs]
    sources = bins.signal_readers(layer, denoised)
    rows = [{"group": g, "library_1": a, "library_2": b} for g, a, b in pairs]
    for name, read in sources.items():
        for row, m in zip(rows, _pair_metrics(bins, read, index, k), strict=True):
            row.update({f"{metric}_{name}": v for metric, v in m.items()})
    table = pd.DataFrame(rows)
    params = {
        "layer": layer, "denoised": denoised if isinstance(denoised, str) else None,
        "groups": list(by_group), "top_k": top_k,
    }  # fmt: skip
    store(bins.data, key_added, params, table=table)
    return table


# --- fingerprint -------------------------------------------------------------------------------


def fingerprint_curve(counts: np.ndarray) -> np.ndarray:
    """deepTools plotFingerprint curve: cumulative share of reads in bins sorted by count."""
    table = ValueTable()
    table.add(np.asarray(counts, dtype=np.float64))
    return _curve_at(table.finish(), np.arange(table.n))


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


def _nonzero_histogram(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bins per count (counts rounded, zero bins dropped) of a value table."""
    v = np.rint(values).astype(np.int64)
    keep = v > 0
    if not keep.any():
        return np.zeros(1)
    return np.bincount(v[keep], weights=counts[keep]).astype(np.float64)


def _binary_relative_entropy(p: float, q: float) -> float:
    x1 = p * np.log2(p / q) if p > 0 else 0.0
    x2 = (1 - p) * np.log2((1 - p) / (1 - q)) if p < 1 else 0.0
    return max(0.0, x1 + x2)


def _chance(chip: ValueTable) -> tuple[float, float, float]:
    """CHANCE (Diaz et al. 2012) as deepTools reports it: % genome enriched, differential
    enrichment and the binary-entropy divergence at the point of largest difference.

    ``chip`` holds the control reads per ChIP count as weights. Bins of equal ChIP count are
    taken together (the largest difference is sought where a count's run of bins ends), so the
    result does not depend on the order of tied bins (deepTools' sort leaves it to chance).
    """
    cs_chip = np.cumsum(chip.values * chip.counts)
    cs_ctrl = np.cumsum(chip.weights)
    if not cs_chip.size or cs_chip[-1] <= 0 or cs_ctrl[-1] <= 0:
        return np.nan, np.nan, np.nan
    diff = cs_ctrl / cs_ctrl[-1] - cs_chip / cs_chip[-1]
    b = int(np.argmax(diff))
    if diff[b] < 1e-6:
        return 0.0, 0.0, 0.0
    n, k = chip.n, int(np.cumsum(chip.counts)[b]) - 1  # the last bin of that run
    p, q = cs_chip[b] / cs_chip[-1], cs_ctrl[b] / cs_ctrl[-1]
    m = (p + q) / 2
    divergence = np.sqrt(0.5 * (_binary_relative_entropy(p, m) + _binary_relative_entropy(q, m)))
    return 100.0 * (n - k) / n, 100.0 * (q - p), float(divergence)


def _sorted_cumsum(table: ValueTable, ranks: np.ndarray) -> np.ndarray:
    """Cumulative sum of the sorted column up to (0-based) positions ``ranks``."""
    ends = np.cumsum(table.counts)
    block = np.searchsorted(ends, ranks, side="right")
    return np.cumsum(table.values * table.counts)[block] - table.values[block] * (
        ends[block] - 1 - ranks
    )


def _curve_at(table: ValueTable, ranks: np.ndarray) -> np.ndarray:
    """:func:`fingerprint_curve` of the column at positions ``ranks``."""
    total = float(np.sum(table.values * table.counts))
    if not total > 0:
        return np.zeros(len(ranks))
    return _sorted_cumsum(table, np.asarray(ranks, dtype=np.int64)) / total


def _table_metrics(chip: ValueTable, control: ValueTable | None) -> dict[str, float]:
    """:func:`fingerprint_metrics` from value tables (``chip`` weighted by control reads)."""
    n = chip.n
    counts, values = chip.counts.astype(np.float64), chip.values
    total = float(np.sum(values * counts))
    ends = np.cumsum(chip.counts)
    starts = ends - chip.counts
    if total > 0:
        # Sum of the curve over every bin, a run of equal values at a time.
        before = np.cumsum(values * counts) - values * counts
        auc = float(np.sum(counts * before + values * counts * (counts + 1) / 2) / total / n)
        first = np.flatnonzero(values > 0)
        x_intercept = (int(starts[first[0]]) + 1) / n if first.size else 1 / n
    else:
        auc, x_intercept = 0.0, 1 / n
    # line - curve is linear along a run of equal values: its largest value is at an end.
    ends_at = np.sort(np.unique(np.r_[starts, ends - 1]))
    gap = ends_at / max(n - 1, 1) - _curve_at(chip, ends_at)
    out = {
        "auc": auc,
        "x_intercept": float(x_intercept),
        "elbow_point": float((ends_at[int(np.argmax(gap))] + 1) / n),
    }
    mu = total / n
    out["synthetic_auc"], out["synthetic_x_intercept"], out["synthetic_elbow_point"] = (
        _expected_poisson(mu)
    )
    chip_hist = _nonzero_histogram(values, chip.counts)
    if mu > 0:
        # Expected histogram of a uniform sample: n · Poisson(k; mu) for k >= 1 (zeros dropped
        # like the observed histogram).
        ks = np.arange(max(chip_hist.size, int(stats.poisson.ppf(1 - 1e-9, mu)) + 2))
        synthetic = n * stats.poisson.pmf(ks, mu)
        synthetic[0] = 0.0
        out["synthetic_js_distance"] = _jensen_shannon_distance(chip_hist, synthetic)
    else:
        out["synthetic_js_distance"] = np.nan
    if control is not None and np.sum(control.values * control.counts) > 0:
        control_hist = _nonzero_histogram(control.values, control.counts)
        out["js_distance"] = _jensen_shannon_distance(chip_hist, control_hist)
        out["pct_genome_enriched"], out["diff_enrichment"], out["chance_divergence"] = _chance(chip)
    else:
        for name in ("js_distance", "pct_genome_enriched", "diff_enrichment", "chance_divergence"):
            out[name] = np.nan
    return out


def fingerprint_metrics(counts: np.ndarray, control: np.ndarray | None = None) -> dict[str, float]:
    """deepTools ``plotFingerprint --outQualityMetrics`` numbers for one library.

    ``auc``, ``x_intercept``, ``elbow_point`` of the fingerprint curve and their ``synthetic_``
    counterparts for a Poisson sample of the same mean; ``synthetic_js_distance`` against that
    Poisson sample; with a control: ``js_distance``, ``pct_genome_enriched``,
    ``diff_enrichment`` and ``chance_divergence`` (CHANCE).
    """
    counts = np.asarray(counts, dtype=np.float64)
    chip = ValueTable()
    chip.add(counts, None if control is None else np.asarray(control, dtype=np.float64))
    ctrl = None
    if control is not None:
        ctrl = ValueTable()
        ctrl.add(np.asarray(control, dtype=np.float64))
        ctrl.finish()
    return _table_metrics(chip.finish(), ctrl)


def fingerprint(
    adata: AnnData | BinStore | str | os.PathLike,
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

    Everything follows from each library's count histogram (bins per count, and control reads
    per ChIP count for CHANCE), so a bins store is read a chunk at a time in memory set by the
    largest count, with the numbers of the same bins in memory.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout, or a bins store (:func:`chipvi.io.open_store` or its
        path).
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
        ``<library>:control``). For a bins store: in the open store's ``uns`` in memory only
        (what :func:`chipvi.pl.fingerprint` of that store draws), not on disk.

    Returns
    -------
    pandas.DataFrame
        Libraries × metrics.
    """
    bins = Blocks(adata)
    where = f"{bins.where}.X" if layer is None else f"{bins.where}.layers[{layer!r}]"
    libs = bins.select(samples, where)
    if int(n_points) < 2:
        raise ChipviInputError(f"n_points must be >= 2, got {n_points}.")
    bins.check_layer(layer)
    bins.check_layer(control_layer)
    cap = None if bins.store is None else MAX_DISTINCT
    cols = [bins.var_names.index(lib) for lib in libs]
    chips = [ValueTable(cap) for _ in libs]
    controls = [ValueTable(cap) for _ in libs] if control_layer is not None else None
    for a, b in bins.ranges:
        y = bins.values(layer, a, b)[:, cols]
        ctrl = bins.values(control_layer, a, b)[:, cols] if controls is not None else None
        for j in range(len(libs)):
            chips[j].add(y[:, j], None if ctrl is None else ctrl[:, j])
            if controls is not None:
                controls[j].add(ctrl[:, j])
    for table in [*chips, *(controls or [])]:
        if table.finish().overflow:
            raise ChipviInputError(
                f"{bins.where}: the fingerprint needs read counts; a library's values have more "
                f"than {MAX_DISTINCT} distinct values (pass the counts as layer=)."
            )
    n = bins.n_obs
    pick = np.unique(np.linspace(0, n - 1, min(int(n_points), n)).round().astype(np.int64))
    curves = {"rank": (pick + 1) / n}
    rows = {}
    for j, lib in enumerate(libs):
        ctrl = controls[j] if controls is not None else None
        rows[lib] = _table_metrics(chips[j], ctrl)
        curves[lib] = _curve_at(chips[j], pick)
        if ctrl is not None and np.sum(ctrl.values * ctrl.counts) > 0:
            curves[f"{lib}:control"] = _curve_at(ctrl, pick)
    metrics = pd.DataFrame.from_dict(rows, orient="index")
    metrics.index.name = "library"
    params = {"layer": layer, "control_layer": control_layer, "n_points": int(n_points)}
    store(bins.data, key_added, params, metrics=metrics, curve=pd.DataFrame(curves))
    return metrics


# --- FRiP ------------------------------------------------------------------------------------


def frip(
    adata: AnnData | BinStore | str | os.PathLike,
    regions: pd.DataFrame | str | os.PathLike,
    *,
    layer: str | None = None,
    per_group: bool | None = None,
    key_added: str | None = "chipvi_frip",
) -> pd.Series:
    """Fraction of reads in regions (FRiP) per library, at bin resolution.

    A bin counts as "in a region" when it overlaps one; FRiP is the share of the library's binned
    reads in such bins (a slight overestimate of base-level FRiP for regions much narrower than a
    bin). A bins store is read a chunk at a time.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout, or a bins store (:func:`chipvi.io.open_store` or its
        path).
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
        ``adata.uns[key_added]["params"]`` (``None``: do not store). For a bins store: in the
        open store's ``var`` and ``uns`` in memory only, not on disk.

    Returns
    -------
    pandas.Series
        FRiP per library.
    """
    bins = Blocks(adata)
    source = None if isinstance(regions, pd.DataFrame) else str(regions)
    if isinstance(regions, str) and regions in bins.uns:
        regions = stored(bins.data, regions, "regions", "call_enriched_regions")
    table = read_regions(regions)
    bins.check_layer(layer)
    var = bins.var
    groups = var["group"].astype(str) if "group" in var else None
    if per_group is None:
        per_group = (
            "group" in table
            and groups is not None
            and bool(set(table["group"].astype(str)) & set(groups))
        )
    if per_group and ("group" not in table or groups is None):
        raise ChipviInputError("per_group=True needs a 'group' column in regions and adata.var.")
    intervals = table[["chrom", "start", "end"]].astype({"chrom": str})
    # Each library's regions: its group's (per_group) or all of them.
    own = {None: intervals}
    if per_group:
        own = {g: intervals[table["group"].astype(str).to_numpy() == g] for g in set(groups)}
    names = bins.var_names
    key = [groups.iloc[j] if per_group else None for j in range(len(names))]
    inside = np.zeros(len(names))
    total = np.zeros(len(names))
    for a, b in bins.ranges:
        obs = bins.obs(a, b)
        masks = {g: overlapping_bins(obs, iv) for g, iv in own.items()}
        y = bins.values(layer, a, b)
        total += y.sum(axis=0)
        for j in range(len(names)):
            inside[j] += y[masks[key[j]], j].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)
    series = pd.Series(result, index=names, name="frip")
    if key_added is not None:
        var[key_added] = series.to_numpy()
        params = {"regions": source, "n_regions": len(table), "layer": layer,
                  "per_group": bool(per_group)}  # fmt: skip
        store(bins.data, key_added, params)
    return series
