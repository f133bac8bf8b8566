"""Quality benchmark: ChIPVI vs MACS3 and deepTools bamCompare against simulated truth.

For each simulated data set (``chipvi.datasets.simulate``, different seeds, two replicates of
different depth with matched inputs) every method scores each 200 bp bin; the scores are
compared with the truth per replicate:

* AUPRC of the truly enriched bins,
* Spearman correlation with the true log fold enrichment,
* replicate Pearson / Spearman between the two replicates' scores,
* mean rank (0-1, lower is better) of the low-mappability artefact bins.

Peers (run here, same BAMs): ``macs3 callpeak -B --SPMR`` then ``macs3 bdgcmp -m FE`` and
``-m ppois``; ``bamCompare --operation log2`` with ``--scaleFactorsMethod readCount`` and
``SES``. ChIPVI counts the simulations with ``read_bams(max_per_position="auto")`` (the
simulator leaves PCR jackpots unflagged and MACS3 drops same-position reads by default;
``--max-per-position none`` counts every read), trains with ``model.train()`` defaults and is
scored four times: the posterior mean log fold enrichment and its 5 % posterior quantile
(``kind="log_fold_enrichment_lower"``, the conservative ranking score), each for the
shared-biology library output (``level="library"``) and for each library's own evidence
(``level="library_own"``: its own reads only). A third simulation (``--specific-seeds``) has
a fraction of features in one replicate only and is scored per library against its own
truth. With ``--real`` it also runs on the bundled CSSQ chr19 data (replicate concordance raw
vs denoised, promoter-window agreement).

Usage::

    python benchmarks/bench_quality.py [--seeds 1 2] [--chrom-length 2500000] [--real]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, rankdata, spearmanr

from chipvi._utils import parse_max_per_position

warnings.filterwarnings("ignore")
for _name in ("lightning", "lightning.pytorch", "scvi"):
    logging.getLogger(_name).setLevel(logging.ERROR)

BIN = 200
HIGHER_BETTER = {
    "auprc_strong": True,
    "auprc_weak": True,
    "spearman_strong": True,
    "spearman_weak": True,
    "rep_pearson": True,
    "rep_spearman": True,
    "artefact_rank": False,
}
#: Metrics of the data set whose replicates do not share every feature (library-level evidence).
LIBRARY_HIGHER_BETTER = {
    "own_auprc_strong": True,
    "own_auprc_weak": True,
    "specific_auc": True,
}


def average_precision(labels: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, ties broken pessimistically)."""
    order = np.lexsort((labels, -score))  # among equal scores, negatives first
    hits = labels[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / max(hits.sum(), 1))


def bedgraph_to_bins(path: Path, chrom_sizes: dict[str, int], fill: float) -> np.ndarray:
    """Overlap-weighted mean of a bedGraph over the 200 bp bins of ``chrom_sizes``."""
    table = pd.read_csv(
        path,
        sep="\t",
        header=None,
        comment="t",
        usecols=[0, 1, 2, 3],
        names=["chrom", "start", "end", "value"],
        dtype={"chrom": str},
    )
    out = []
    for chrom, size in chrom_sizes.items():
        n = -(-size // BIN)
        total, covered = np.zeros(n), np.zeros(n)
        sub = table[table["chrom"] == chrom]
        for s, e, v in zip(
            sub["start"].to_numpy(), sub["end"].to_numpy(), sub["value"].to_numpy(), strict=True
        ):
            b0, b1 = s // BIN, (e - 1) // BIN
            for b in range(b0, min(b1, n - 1) + 1):
                ov = min(e, (b + 1) * BIN) - max(s, b * BIN)
                total[b] += ov * v
                covered[b] += ov
        width = np.minimum(BIN, size - np.arange(n) * BIN)
        values = (total + (width - covered).clip(min=0) * fill) / width
        out.append(values)
    return np.concatenate(out)


def run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=fh)


def macs3_scores(sheet: pd.DataFrame, root: Path, work: Path, chrom_sizes, frag: int):
    genome = str(sum(chrom_sizes.values()))
    fe, pp = [], []
    for row in sheet.itertuples():
        name = row.sample
        run(
            [
                "macs3",
                "callpeak",
                "-t",
                str(root / row.bam),
                "-c",
                str(root / row.control),
                "-f",
                "BAM",
                "-g",
                genome,
                "-n",
                name,
                "--outdir",
                str(work),
                "-B",
                "--SPMR",
                "--nomodel",
                "--extsize",
                str(frag),
            ],
            work / "macs3.log",
        )
        treat, ctrl = work / f"{name}_treat_pileup.bdg", work / f"{name}_control_lambda.bdg"
        for method, dest in (("FE", fe), ("ppois", pp)):
            out = work / f"{name}_{method}.bdg"
            run(
                [
                    "macs3",
                    "bdgcmp",
                    "-t",
                    str(treat),
                    "-c",
                    str(ctrl),
                    "-m",
                    method,
                    "-o",
                    str(out),
                ],
                work / "macs3.log",
            )
            dest.append(bedgraph_to_bins(out, chrom_sizes, fill=1.0 if method == "FE" else 0.0))
    return {"MACS3 FE": np.column_stack(fe), "MACS3 ppois": np.column_stack(pp)}


def bamcompare_scores(sheet: pd.DataFrame, root: Path, work: Path, chrom_sizes, frag: int):
    out = {}
    for method in ("readCount", "SES"):
        cols = []
        for row in sheet.itertuples():
            dest = work / f"{row.sample}_{method}.bedgraph"
            run(
                [
                    "bamCompare",
                    "-b1",
                    str(root / row.bam),
                    "-b2",
                    str(root / row.control),
                    "--operation",
                    "log2",
                    "--scaleFactorsMethod",
                    method,
                    "--binSize",
                    str(BIN),
                    "--extendReads",
                    str(frag),
                    "--outFileFormat",
                    "bedgraph",
                    "-o",
                    str(dest),
                    "-p",
                    "1",
                ],
                work / "bamCompare.log",
            )
            cols.append(bedgraph_to_bins(dest, chrom_sizes, fill=0.0))
        out[f"bamCompare log2 {method}"] = np.column_stack(cols)
    return out


#: chipvi's scores (name: kind, level): posterior mean and conservative ranking score (5 %
#: quantile), shared-biology and own-evidence library outputs.
CHIPVI_KINDS = {
    "chipvi LFE": ("log_fold_enrichment", "library"),
    "chipvi LFE 5% lower": ("log_fold_enrichment_lower", "library"),
    "chipvi own-evidence LFE": ("log_fold_enrichment", "library_own"),
    "chipvi own-evidence 5% lower": ("log_fold_enrichment_lower", "library_own"),
}


def chipvi_scores(samplesheet: Path, threads: int, train_seed: int = 0, max_per_position=None):
    import scvi
    import torch

    import chipvi

    torch.set_num_threads(threads)
    scvi.settings.seed = train_seed
    adata = chipvi.read_bams(samplesheet, progress=False, max_per_position=max_per_position)
    chipvi.ChIPVI.setup_anndata(adata)
    model = chipvi.ChIPVI(adata)
    t0 = time.perf_counter()
    model.train(enable_progress_bar=False)
    seconds = time.perf_counter() - t0
    scores = {
        name: model.get_denoised(kind=kind, level=level, return_numpy=True)
        for name, (kind, level) in CHIPVI_KINDS.items()
    }
    return scores, adata, seconds


def metrics(score: np.ndarray, truth: pd.DataFrame, group: str, strong: int, weak: int) -> dict:
    enriched = truth[f"enriched_{group}"].to_numpy()
    lfe = truth[f"lfe_{group}"].to_numpy()
    art = truth["low_mappability"].to_numpy()
    n = len(truth)
    ranks = [rankdata(score[:, j])[art].mean() / n for j in range(score.shape[1])]
    return {
        "auprc_strong": average_precision(enriched, score[:, strong]),
        "auprc_weak": average_precision(enriched, score[:, weak]),
        "spearman_strong": spearmanr(lfe, score[:, strong])[0],
        "spearman_weak": spearmanr(lfe, score[:, weak])[0],
        "rep_pearson": pearsonr(score[:, 0], score[:, 1])[0],
        "rep_spearman": spearmanr(score[:, 0], score[:, 1])[0],
        "artefact_rank": max(ranks),
    }


def roc_auc(labels: np.ndarray, score: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    ranks = rankdata(score)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def library_metrics(
    score: np.ndarray, truth: pd.DataFrame, samples: list[str], strong: int, weak: int
) -> dict:
    """Does each library's score carry its own evidence? (replicate-specific features)

    ``own_auprc_*``: AUPRC against the library's own enriched bins (a copy of the group's
    output also flags the features the library lacks). ``specific_auc``: over the bins of
    features carried by one replicate only, the probability that the difference of the two
    libraries' scores is larger where the first carries the feature than where the second
    does (0.5: the libraries' outputs do not tell them apart, as for a copy).
    """
    own = [truth[f"enriched_{s}"].to_numpy() for s in samples]
    only_first, only_second = own[0] & ~own[1], own[1] & ~own[0]
    specific = only_first | only_second
    return {
        "own_auprc_strong": average_precision(own[strong], score[:, strong]),
        "own_auprc_weak": average_precision(own[weak], score[:, weak]),
        "specific_auc": roc_auc(only_first[specific], (score[:, 0] - score[:, 1])[specific]),
    }


def bench_simulation(
    seed: int,
    chrom_length: int,
    workdir: Path,
    threads: int,
    reuse_peers: bool = False,
    train_seeds: tuple[int, ...] = (0,),
    max_per_position=None,
    specific_fraction: float = 0.0,
) -> pd.DataFrame:
    """Simulate, score every method and return the metrics table (one row per method).

    With ``specific_fraction`` > 0 that fraction of features is carried by one replicate only
    and the table holds :func:`library_metrics`; otherwise :func:`metrics`.
    """
    from chipvi.datasets import simulate

    tag = f"{seed}_specific{specific_fraction:g}" if specific_fraction else f"{seed}"
    out = workdir / f"sim{tag}"
    sim = simulate(
        out,
        seed=seed,
        n_chroms=2,
        chrom_length=chrom_length,
        replicate_specific_fraction=specific_fraction,
        overwrite=True,
    )
    sheet = pd.read_csv(sim.samplesheet)
    root = sim.samplesheet.parent
    frag = 200
    libs = sim.libraries.set_index("sample")
    strong = int(np.argmax(libs.loc[sheet["sample"], "depth"].to_numpy()))
    weak = 1 - strong
    group = sheet["group"].iloc[0]
    scores = {}
    cache = workdir / f"peer_scores_seed{tag}_{chrom_length}.npz"
    t0 = time.perf_counter()
    if reuse_peers and cache.is_file():
        with np.load(cache) as saved:
            scores.update({name: saved[name] for name in saved.files})
        print(f"(peer scores reused from {cache})")
    else:
        scores.update(macs3_scores(sheet, root, out, sim.chrom_sizes, frag))
        scores.update(bamcompare_scores(sheet, root, out, sim.chrom_sizes, frag))
        np.savez(cache, **scores)
    peer_s = time.perf_counter() - t0
    train_times = []
    for train_seed in train_seeds:
        denoised, adata, train_s = chipvi_scores(
            sim.samplesheet, threads, train_seed, max_per_position
        )
        assert adata.n_obs == len(sim.truth)
        train_times.append(train_s)
        suffix = f" (train seed {train_seed})" if len(train_seeds) > 1 else ""
        scores.update({name + suffix: score for name, score in denoised.items()})
    if specific_fraction:
        samples = sheet["sample"].tolist()
        rows = {n: library_metrics(s, sim.truth, samples, strong, weak) for n, s in scores.items()}
    else:
        rows = {name: metrics(s, sim.truth, group, strong, weak) for name, s in scores.items()}
    table = pd.DataFrame(rows).T
    what = f", {specific_fraction:.0%} of features in one replicate only" * bool(specific_fraction)
    print(
        f"\n## seed {seed}{what}: {adata.n_obs} bins x {adata.n_vars} libraries, depths "
        f"{libs['depth'].tolist()}; chipvi train "
        f"{', '.join(f'{t:.1f}' for t in train_times)} s, peers {peer_s:.1f} s"
    )
    return table


def verdict(table: pd.DataFrame) -> pd.DataFrame:
    """Per chipvi row and metric: does it beat the best peer?"""
    ours = table.loc[table.index.str.startswith("chipvi")]
    peers = table.drop(index=ours.index)
    out = {}
    for metric, higher in {**HIGHER_BETTER, **LIBRARY_HIGHER_BETTER}.items():
        if metric not in table:
            continue
        best = peers[metric].max() if higher else peers[metric].min()
        out[metric] = ours[metric] > best if higher else ours[metric] < best
    return pd.DataFrame(out)


def real_data_concordance(adata, lfe: dict[str, np.ndarray]) -> tuple[pd.DataFrame, int]:
    """Replicate concordance and promoter-window AUPRC, raw log CPM vs denoised scores.

    ``adata`` is the bundled CSSQ data (``cssq_chr19()``); ``lfe`` maps a name to a
    library-level score.
    Returns the table and the number of bins in the promoter windows of ``chr19_regions.bed``.
    """
    from chipvi.datasets import cssq_chr19_samplesheet
    from chipvi.io import read_bed
    from chipvi.io._bed import overlapping_bins

    regions = read_bed(cssq_chr19_samplesheet().parent / "chr19_regions.bed")
    in_promoter = overlapping_bins(adata.obs, regions)
    cpm = np.log1p(adata.X.astype(float) / adata.var["depth"].to_numpy() * 1e6)
    rows = []
    for g in adata.var["group"].unique():
        a, b = np.flatnonzero(adata.var["group"].to_numpy() == g)[:2]
        for name, score in (("raw log CPM", cpm), *lfe.items()):
            rows.append(
                {
                    "group": g,
                    "score": name,
                    "rep_pearson": pearsonr(score[:, a], score[:, b])[0],
                    "rep_spearman": spearmanr(score[:, a], score[:, b])[0],
                    "promoter_auprc_r1": average_precision(in_promoter, score[:, a]),
                    "promoter_auprc_r2": average_precision(in_promoter, score[:, b]),
                }
            )
    return pd.DataFrame(rows), int(in_promoter.sum())


def bench_real(threads: int) -> None:
    import scvi
    import torch

    import chipvi
    from chipvi.datasets import cssq_chr19

    torch.set_num_threads(threads)
    scvi.settings.seed = 0
    adata = cssq_chr19()
    chipvi.ChIPVI.setup_anndata(adata)
    model = chipvi.ChIPVI(adata)
    model.train(enable_progress_bar=False)
    lfe = {
        name: model.get_denoised(kind=kind, level=level, return_numpy=True)
        for name, (kind, level) in CHIPVI_KINDS.items()
    }
    table, n_promoter = real_data_concordance(adata, lfe)
    print(
        f"\n## bundled CSSQ chr19 ({adata.n_obs} bins, {n_promoter} in promoter "
        "windows of chr19_regions.bed)"
    )
    print(table.round(3).to_string(index=False))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--chrom-length", type=int, default=2_500_000)
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="train chipvi once per seed (scvi.settings.seed) on each simulation",
    )
    parser.add_argument(
        "--max-per-position",
        type=parse_max_per_position,
        default="auto",
        help="chipvi's read_bams(max_per_position=...) on the simulations: N, auto (default, "
        "as in bench_peaks; MACS3 runs with its default --keep-dup 1) or none",
    )
    parser.add_argument(
        "--specific-seeds",
        type=int,
        nargs="*",
        default=[3],
        help="simulations (seeds) whose replicates do not share every feature, scored for "
        "library-level evidence (none: skip)",
    )
    parser.add_argument(
        "--specific-fraction",
        type=float,
        default=0.3,
        help="fraction of features carried by one replicate only in --specific-seeds",
    )
    parser.add_argument("--real", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 on a shared machine; >1 oversubscribes)",
    )
    parser.add_argument(
        "--reuse-peers",
        action="store_true",
        help="reuse peer scores saved by an earlier run in the --keep folder "
        "(same seeds, same simulator)",
    )
    parser.add_argument("--keep", help="keep simulated data and peer outputs in this folder")
    args = parser.parse_args(argv)
    missing = [t for t in ("macs3", "bamCompare") if shutil.which(t) is None]
    if missing:
        print(
            f"missing peer tools {missing}: run bash benchmarks/install_peers.sh", file=sys.stderr
        )
        return 2
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="chipvi_quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    all_ok = {}
    try:
        runs = [(seed, 0.0) for seed in args.seeds]
        runs += [(seed, args.specific_fraction) for seed in args.specific_seeds]
        for seed, fraction in runs:
            table = bench_simulation(
                seed,
                args.chrom_length,
                workdir,
                args.threads,
                args.reuse_peers,
                tuple(args.train_seeds),
                args.max_per_position,
                fraction,
            )
            print(table.round(3).to_string())
            ok = verdict(table)
            print("chipvi beats the best peer (per chipvi score and metric):")
            print(ok.to_string())
            for name, row in ok.iterrows():
                kind = name.split(" (train seed")[0]
                all_ok[kind] = all_ok.get(kind, True) and bool(row.all())
        if args.real:
            bench_real(args.threads)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for kind, ok in all_ok.items():
        print(f"\n{kind}: ALL METRICS BEAT BEST PEER ON EVERY DATA SET (and training seed): {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
