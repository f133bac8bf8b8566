"""Scale: time and memory of ChIPVI's training epoch and posterior pass as bins grow.

Counts are drawn directly (no BAMs): per chromosome of 200 bp bins, a smooth copy-number
background seen by ChIP and control, narrow peaks and broad domains shared by the replicates
of each group, NB noise, a few low-MAPQ pile-ups. For each size the script builds the AnnData
(bins × libraries with the four layers ``read_bams`` writes), then times in one process:

* one training epoch (``model.train(max_epochs=1)``, default minibatches),
* ``model.train()`` with its defaults (``--defaults``),
* ``model.add_posterior()`` (every level and summary, one pass),

and reports bins·libraries per second and the peak resident memory after each stage
(``ru_maxrss``, monotone over the process) against the AnnData's size.

Usage::

    python benchmarks/bench_scale.py --bins 3000000 --libraries 2 [--defaults]
    python benchmarks/bench_scale.py --genome hg38 --libraries 4 --defaults
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
for _name in ("lightning", "lightning.pytorch", "scvi"):
    logging.getLogger(_name).setLevel(logging.ERROR)

#: GRCh38 primary chromosome lengths (chr1-22, X), for ``--genome hg38``.
HG38 = [
    248956422, 242193529, 198295559, 190214555, 181538259, 170805979, 159345973, 145138636,
    138394717, 133797422, 135086622, 133275309, 114364328, 107043718, 101991189, 90338345,
    83257441, 80373285, 58617616, 64444167, 46709983, 50818468, 156040895,
]  # fmt: skip
BIN = 200


def simulate_counts(chrom_bins: list[int], n_libraries: int, seed: int = 0):
    """AnnData of simulated counts (two libraries per group), in the read_bams layout."""
    import pandas as pd
    from anndata import AnnData

    rng = np.random.default_rng(seed)
    n = int(sum(chrom_bins))
    n_groups = max(1, n_libraries // 2)
    # Smooth background: a random walk averaged over ~50 bins, exponentiated.
    walk = np.cumsum(rng.normal(0, 0.05, n)).astype(np.float32)
    walk -= np.convolve(walk, np.ones(501, np.float32) / 501, mode="same")
    background = np.exp(np.clip(walk, -1.5, 1.5)).astype(np.float32)
    lfe = np.zeros((n, n_groups), np.float32)
    for g in range(n_groups):
        starts = rng.integers(0, n - 300, n // 400)
        widths = np.where(rng.random(starts.size) < 0.8, rng.integers(1, 5, starts.size),
                          rng.integers(20, 250, starts.size))  # fmt: skip
        heights = rng.uniform(0.8, 3.0, starts.size).astype(np.float32)
        for s, w, h in zip(starts, widths, heights, strict=True):
            lfe[s : s + w, g] = np.maximum(lfe[s : s + w, g], h)
    artefact = np.zeros(n, bool)
    for s in rng.integers(0, n - 5, n // 20000 + 1):
        artefact[s : s + 3] = True
    tech = background * np.where(artefact, 12.0, 1.0).astype(np.float32)
    control = rng.poisson(0.6 * tech).astype(np.float32)
    cmapq = np.where(artefact, 3.0, 40.0).astype(np.float32) * (control > 0)
    X = np.empty((n, n_libraries), np.float32)
    for j in range(n_libraries):
        mean = 0.5 * tech * np.exp(lfe[:, j % n_groups] * (1.0 if j < n_groups else 0.8))
        X[:, j] = rng.negative_binomial(5.0, 5.0 / (5.0 + mean))
    chroms = np.repeat([f"chr{i + 1}" for i in range(len(chrom_bins))], chrom_bins)
    starts = np.concatenate([np.arange(b, dtype=np.int64) * BIN for b in chrom_bins])
    obs = pd.DataFrame(
        {"chrom": pd.Categorical(chroms), "start": starts, "end": starts + BIN},
        index=pd.RangeIndex(n).astype(str),
    )
    groups = [f"G{j % n_groups}" for j in range(n_libraries)]
    var = pd.DataFrame(
        {
            "group": groups,
            "depth": X.sum(0).astype(float),
            "control_depth": float(control.sum()),
        },
        index=[f"{g}_R{j // n_groups + 1}" for j, g in enumerate(groups)],
    )
    layers = {
        "control": np.repeat(control[:, None], n_libraries, 1),
        "mapq": np.where(X > 0, np.where(artefact, 3.0, 40.0)[:, None], 0).astype(np.float32),
        "control_mapq": np.repeat(cmapq[:, None], n_libraries, 1),
    }
    return AnnData(X=X, obs=obs, var=var, layers=layers)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=3_000_000, help="total 200 bp bins")
    parser.add_argument("--genome", choices=["hg38"], help="chromosome sizes instead of --bins")
    parser.add_argument("--libraries", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--defaults", action="store_true", help="also time model.train()")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    import scvi
    import torch

    torch.set_num_threads(args.threads)
    from chipvi.model import ChIPVI

    if args.genome == "hg38":
        chrom_bins = [-(-length // BIN) for length in HG38]
    else:
        per = 50_000_000 // BIN
        chrom_bins = [per] * (args.bins // per) + ([args.bins % per] if args.bins % per else [])
    t0 = time.perf_counter()
    adata = simulate_counts(chrom_bins, args.libraries)
    n_cells = adata.n_obs * adata.n_vars
    size_mib = (adata.X.nbytes + sum(v.nbytes for v in adata.layers.values())) / 2**20
    rows = [("simulate counts (not chipvi)", time.perf_counter() - t0, None, _peak_mib())]
    scvi.settings.seed = 0
    ChIPVI.setup_anndata(adata)
    model = ChIPVI(adata)
    t0 = time.perf_counter()
    model.train(max_epochs=1, enable_progress_bar=False, accelerator="cpu")
    secs = time.perf_counter() - t0
    rows.append(("one training epoch", secs, n_cells / secs, _peak_mib()))
    if args.defaults:
        model = ChIPVI(adata)
        t0 = time.perf_counter()
        model.train(enable_progress_bar=False, accelerator="cpu")
        secs = time.perf_counter() - t0
        epochs = len(model.history["elbo_train"])
        rows.append((f"model.train() defaults ({epochs} epochs)", secs, n_cells * epochs / secs,
                     _peak_mib()))  # fmt: skip
    t0 = time.perf_counter()
    model.add_posterior()
    secs = time.perf_counter() - t0
    rows.append(("add_posterior (all levels)", secs, n_cells / secs, _peak_mib()))

    head = (
        f"{adata.n_obs:,} bins x {adata.n_vars} libraries ({len(chrom_bins)} chromosomes), "
        f"AnnData layers {size_mib:.0f} MiB, {args.threads} threads"
    )
    lines = [
        "| stage | seconds | bins·libraries/s | peak RSS so far (MiB) | RSS / (3 × AnnData + 1 GiB) |",
        "|---|---|---|---|---|",
    ]
    for name, secs, rate, peak in rows:
        rate_s = f"{rate:,.0f}" if rate else ""
        lines.append(
            f"| {name} | {secs:.1f} | {rate_s} | {peak:,.0f} | {peak / (3 * size_mib + 1024):.2f} |"
        )
    print(head)
    print("\n".join(lines))
    if args.write_results:
        from _record import write_section

        name = "Scale (bench_scale.py" + (f", {args.genome})" if args.genome else ")")
        body = head + "\n\n" + "\n".join(lines)
        print(f"wrote {write_section(name, body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
