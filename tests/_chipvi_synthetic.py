"""Tiny synthetic ChIP-seq AnnData in the read_bams layout, with known truth (for model tests).

Counts are NB around a technical mean built from a smooth copy-number background, depth and
low-mappability artefacts (high control, low MAPQ, pile-up also in ChIP), times the group's
true fold enrichment (narrow peaks and broad domains shared by replicates); one replicate has
PCR jackpots.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData


def make_chip_adata(
    n_bins: int = 3000,
    depths: tuple[int, ...] = (400_000, 150_000),
    groups: tuple[str, ...] = ("A", "A"),
    control_depth: int = 300_000,
    seed: int = 0,
    dispersion: float = 8.0,
) -> tuple[AnnData, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(groups))
    lfe = np.zeros((n_bins, len(names)))
    shared = np.zeros(n_bins)
    for _ in range(max(1, n_bins // 150)):  # narrow peaks, most shared by all groups
        c, w = rng.integers(0, n_bins), rng.integers(2, 7)
        h = rng.uniform(1.5, 3.0)
        prof = h * np.exp(-0.5 * ((np.arange(n_bins) - c) / (w / 2)) ** 2)
        shared = np.maximum(shared, prof)
    for _ in range(max(1, n_bins // 1500)):  # broad domains
        s, w = rng.integers(0, n_bins), rng.integers(60, 250)
        shared[s : s + w] = np.maximum(shared[s : s + w], rng.uniform(1.0, 1.4))
    for g in range(len(names)):
        lfe[:, g] = shared
        if g > 0:  # group-specific peaks
            for _ in range(max(1, n_bins // 600)):
                c = rng.integers(0, n_bins)
                lfe[c : c + 4, g] = rng.uniform(1.0, 2.5)
    lfe[lfe < 0.3] = 0.0
    # Technical background: smooth copy-number/open-chromatin variation.
    cnv = np.exp(np.convolve(rng.normal(0, 0.6, n_bins), np.ones(50) / 50, mode="same") * 4)
    artefact = np.zeros(n_bins, bool)
    for _ in range(max(1, n_bins // 1000)):
        s = rng.integers(0, n_bins - 5)
        artefact[s : s + rng.integers(2, 5)] = True
    art_factor = np.where(artefact, 15.0, 1.0)
    base = 3.0 / n_bins
    n_lib = len(groups)
    X = np.zeros((n_bins, n_lib), np.int32)
    control = np.zeros((n_bins, n_lib), np.int32)
    mapq = np.zeros((n_bins, n_lib), np.float32)
    control_mapq = np.zeros((n_bins, n_lib), np.float32)
    ctrl_mu = control_depth * base * cnv * art_factor
    ctrl = rng.poisson(ctrl_mu).astype(np.int32)
    ctrl_q = np.where(
        ctrl > 0, np.where(artefact, rng.uniform(2, 10, n_bins), rng.uniform(35, 42, n_bins)), 0
    )
    for j, (d, g) in enumerate(zip(depths, groups, strict=True)):
        mu = d * base * cnv * art_factor * np.exp(lfe[:, names.index(g)])
        mu = mu / mu.sum() * d * 0.06 * (n_bins * 200 / 3e5)  # a 3e5-bp region gets 6 % of reads
        y = rng.negative_binomial(dispersion, dispersion / (dispersion + mu))
        if j == 1:  # PCR jackpots in the second library
            jp = rng.choice(np.flatnonzero(lfe[:, names.index(g)] == 0), 3, replace=False)
            y[jp] += rng.integers(30, 60, 3)
        X[:, j] = y
        control[:, j] = ctrl
        control_mapq[:, j] = ctrl_q
        mapq[:, j] = np.where(
            y > 0, np.where(artefact, rng.uniform(2, 10, n_bins), rng.uniform(35, 42, n_bins)), 0
        )
    starts = np.arange(n_bins, dtype=np.int64) * 200
    obs = pd.DataFrame(
        {"chrom": pd.Categorical(["chr1"] * n_bins), "start": starts, "end": starts + 200},
        index=[f"chr1:{s}-{s + 200}" for s in starts],
    )
    samples = [f"{g}_R{sum(1 for h in groups[:j] if h == g) + 1}" for j, g in enumerate(groups)]
    var = pd.DataFrame(
        {
            "sample": samples,
            "target": "H3K4me3",
            "group": list(groups),
            "replicate": [s.split("_R")[1] for s in samples],
            "depth": np.asarray(depths, dtype=np.int64),
            "control": "input",
            "control_depth": control_depth,
            "bam": "",
            "control_bam": "",
        },
        index=samples,
    )
    adata = AnnData(
        X=X,
        obs=obs,
        var=var,
        layers={"control": control, "mapq": mapq, "control_mapq": control_mapq},
    )
    adata.uns["chipvi"] = {"bin_size": 200, "chrom_sizes": {"chr1": n_bins * 200}}
    truth = pd.DataFrame(
        {f"lfe_{g}": lfe[:, k] for k, g in enumerate(names)}, index=adata.obs_names
    )
    for g in names:
        truth[f"enriched_{g}"] = truth[f"lfe_{g}"] > 0
    truth["low_mappability"] = artefact
    return adata, truth


def make_two_chromosome_adata(n_bins: int = 2400) -> AnnData:
    """Synthetic bins on chr1 (with a gap: 40 bins removed) and chr2, genome order."""
    adata, _ = make_chip_adata(n_bins=n_bins, seed=3)
    n1 = n_bins * 3 // 5
    chrom = np.where(np.arange(n_bins) < n1, "chr1", "chr2")
    start = np.where(np.arange(n_bins) < n1, np.arange(n_bins), np.arange(n_bins) - n1) * 200
    adata.obs = pd.DataFrame(
        {"chrom": pd.Categorical(chrom), "start": start, "end": start + 200},
        index=[f"{c}:{s}-{s + 200}" for c, s in zip(chrom, start, strict=True)],
    )
    keep = np.ones(n_bins, bool)
    keep[500:540] = False
    adata = adata[keep].copy()
    adata.uns["chipvi"] = {"bin_size": 200, "chrom_sizes": {"chr1": n1 * 200,
                                                            "chr2": (n_bins - n1) * 200}}  # fmt: skip
    return adata
