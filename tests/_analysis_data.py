"""Small AnnData in the chipvi contract layout, built on the fly for the analysis tests."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

CHROM_SIZES = {"chr1": 10_050, "chr2": 6_000}
BIN = 200
# Enriched blocks per group as (chrom, first bin, last bin inclusive).
ENRICHED = {
    "A": [("chr1", 5, 9), ("chr1", 30, 31), ("chr2", 10, 14)],
    "B": [("chr1", 5, 9), ("chr2", 20, 27)],
}


def bins_obs() -> pd.DataFrame:
    rows = []
    for chrom, size in CHROM_SIZES.items():
        starts = np.arange(0, size, BIN)
        rows.append(
            pd.DataFrame({"chrom": chrom, "start": starts, "end": np.minimum(starts + BIN, size)})
        )
    obs = pd.concat(rows, ignore_index=True)
    obs["chrom"] = pd.Categorical(obs["chrom"], categories=list(CHROM_SIZES))
    obs["start"] = obs["start"].astype(np.int64)
    obs["end"] = obs["end"].astype(np.int64)
    obs.index = [
        f"{c}:{s}-{e}" for c, s, e in zip(obs["chrom"], obs["start"], obs["end"], strict=True)
    ]
    return obs


def truth_mask(obs: pd.DataFrame, group: str) -> np.ndarray:
    mask = np.zeros(len(obs), dtype=bool)
    for chrom, first, last in ENRICHED[group]:
        on = (obs["chrom"] == chrom).to_numpy()
        idx = np.flatnonzero(on)[first : last + 1]
        mask[idx] = True
    return mask


def make_adata(seed: int = 0, background: float = 4.0, fold: float = 8.0) -> ad.AnnData:
    """Two groups (A, B) × two replicates; enriched blocks from ``ENRICHED``."""
    rng = np.random.default_rng(seed)
    obs = bins_obs()
    libs = [("A_1", "A", 1), ("A_2", "A", 2), ("B_1", "B", 1), ("B_2", "B", 2)]
    n = len(obs)
    control = rng.poisson(background, size=(n, 1)).repeat(len(libs), axis=1).astype(np.int32)
    X = np.empty((n, len(libs)), dtype=np.int32)
    for j, (_, group, _) in enumerate(libs):
        rate = np.full(n, background) * np.where(truth_mask(obs, group), fold, 1.0)
        X[:, j] = rng.poisson(rate)
    var = pd.DataFrame(
        {
            "sample": [lib[0] for lib in libs],
            "target": "H3K4me3",
            "group": [lib[1] for lib in libs],
            "replicate": [lib[2] for lib in libs],
            "depth": X.sum(axis=0).astype(np.int64),
            "control": "input",
            "control_depth": np.int64(control[:, 0].sum()),
            "bam": "",
            "control_bam": "",
        },
        index=[lib[0] for lib in libs],
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["mapq"] = np.where(X > 0, 40.0, 0.0).astype(np.float32)
    adata.layers["control"] = control
    adata.layers["control_mapq"] = np.where(control > 0, 40.0, 0.0).astype(np.float32)
    adata.uns["chipvi"] = {
        "bin_size": BIN,
        "chrom_sizes": dict(CHROM_SIZES),
        "fragment_length": 200,
        "min_mapq": 10,
        "keep_duplicates": False,
        "version": "test",
    }
    return adata


def _blocky_background(rng, length, n):
    """Uniform positions, denser in every other 20 kb block (long-range coverage variation)."""
    pos = rng.integers(0, length, size=4 * n)
    keep = rng.random(pos.size) < np.where((pos // 20_000) % 2 == 0, 1.0, 0.2)
    return pos[keep][:n]


def write_fragment_bam(
    path, *, chrom_len=300_000, n_peaks=40, per_peak=150, n_background=30_000, frag_len=180,
    read_len=50, seed=0,
):  # fmt: skip
    """Sorted, indexed single-end BAM: fragments piled at peaks plus uniform background.

    Each fragment yields one read at random strand: + reads start at the fragment start, − reads
    end at the fragment end, so the strands' 5′ ends are ``frag_len - 1`` bp apart.
    """
    import pysam

    rng = np.random.default_rng(seed)
    centres = rng.integers(2_000, chrom_len - 2_000, size=n_peaks)
    starts = np.concatenate(
        [
            (np.repeat(centres, per_peak) + rng.normal(0, 25, size=n_peaks * per_peak)).astype(int)
            - frag_len // 2,
            _blocky_background(rng, chrom_len - frag_len, n_background),
        ]
    )
    reverse = rng.random(starts.size) < 0.5
    read_start = np.where(reverse, starts + frag_len - read_len, starts)
    order = np.argsort(read_start, kind="stable")
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": chrom_len}]}
    unsorted = str(path) + ".tmp.bam"
    with pysam.AlignmentFile(unsorted, "wb", header=header) as out:
        for i, k in enumerate(order):
            seg = pysam.AlignedSegment(out.header)
            seg.query_name = f"r{i}"
            seg.query_sequence = "A" * read_len
            seg.flag = 16 if reverse[k] else 0
            seg.reference_id = 0
            seg.reference_start = int(read_start[k])
            seg.mapping_quality = 40
            seg.cigarstring = f"{read_len}M"
            seg.query_qualities = pysam.qualitystring_to_array("I" * read_len)
            out.write(seg)
    pysam.sort("-o", str(path), unsorted)
    pysam.index(str(path))
    import os

    os.remove(unsorted)
    return path


def train_on_simulation(out, *, epochs: int = 40, **simulate_kwargs):
    """Simulate BAMs into ``out``, bin them and train a small ChIPVI (one torch thread, seeded).

    Returns ``(simulation, adata, model)``; the model pulls in torch, so it is imported here.
    """
    import scvi
    import torch

    import chipvi

    torch.set_num_threads(1)
    sim = chipvi.datasets.simulate(out, **simulate_kwargs)
    adata = chipvi.read_bams(sim.samplesheet, progress=False)
    chipvi.ChIPVI.setup_anndata(adata)
    # Seed torch, numpy and random before the weights are drawn: seeding only before training
    # left the result dependent on which tests ran earlier in the process.
    scvi.settings.seed = 0
    model = chipvi.ChIPVI(adata)
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False)
    return sim, adata, model


def write_posterior(adata, group_lfe, group_sd=0.3, *, threshold: float = 0.5, mu=None):
    """Write what ``ChIPVI.add_posterior`` writes (its ``POSTERIOR_KEYS``, prefix ``chipvi``)
    from a known group-level posterior: Gaussian with mean ``group_lfe`` (bins × groups
    DataFrame) and sd ``group_sd``; each library (own evidence too) sees its group's values;
    technical ``mu`` (default: the control layer + 0.5) and ``r`` = 10."""
    from scipy.stats import norm

    from chipvi.model._chipvi import LOWER_QUANTILE, POSTERIOR_KEYS

    lfe = group_lfe.astype(np.float64)
    sd = pd.DataFrame(np.broadcast_to(group_sd, lfe.shape), index=lfe.index, columns=lfe.columns)
    group = {
        "log_fold_enrichment": lfe,
        "sd": sd,
        "log_fold_enrichment_lower": lfe + sd * norm.ppf(LOWER_QUANTILE),
        "probability_enriched": pd.DataFrame(
            norm.sf(threshold, lfe, sd), index=lfe.index, columns=lfe.columns
        ),
    }
    lib_group = adata.var["group"].astype(str).to_numpy()
    if mu is None:
        mu = np.asarray(adata.layers["control"], dtype=np.float32) + 0.5
    technical = {
        "mu": np.asarray(mu, dtype=np.float32),
        "r": np.full(adata.shape, 10.0, np.float32),
    }
    keys: dict = {}
    for (level, kind), template in POSTERIOR_KEYS.items():
        slot, name = template.format(prefix="chipvi").split("/")
        if level == "technical":
            adata.layers[name] = technical[kind]
        elif level == "group":
            adata.obsm[name] = group[kind].astype(np.float32)
        else:
            adata.layers[name] = group[kind][lib_group].to_numpy(dtype=np.float32)
        keys.setdefault(level, {})[kind] = f"{slot}/{name}"
    adata.uns["chipvi_posterior"] = {
        "params": {"enrichment_threshold": threshold, "log_base": "e"},
        "keys": keys,
    }
    return adata


def truth_posterior(adata, lfe: float = 2.0, sd=0.3, threshold: float = 0.5, mu=None):
    """``write_posterior`` with the groups' true blocks at ``lfe`` and 0 elsewhere."""
    frame = pd.DataFrame(
        {g: np.where(truth_mask(adata.obs, g), lfe, 0.0) for g in ("A", "B")},
        index=adata.obs_names,
    )
    return write_posterior(adata, frame, sd, threshold=threshold, mu=mu)
