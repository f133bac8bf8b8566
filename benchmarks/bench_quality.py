"""Quality benchmark: ChIPVI against fair peers on simulated truth, fresh seeds, several scenarios.

Each seed simulates two chromosomes (``chipvi.datasets.simulate(seed=..., scenario=...)``), one
group of two replicates of different depth with matched inputs. Every method scores each 200 bp
bin; scores are compared with the truth (``benchmarks/_scoring.py``, one scoring for every
benchmark):

* AUPRC of the truly enriched bins (threshold-grouped, as scikit-learn), strong and weak
  replicate;
* Spearman correlation with the true log fold enrichment, strong and weak replicate;
* replicate Pearson / Spearman, only for outputs whose replicates use their own reads
  (peers per replicate, chipvi ``library_own``); NaN for shared or pooled outputs, where it is
  near 1 by construction;
* artefact rank: mean rank (0-1, lower is better) of the low-mappability bins, worst library.

Peers (``benchmarks/_peers.py``, versions printed with every table): MACS3 log2 FE with
``--keep-dup auto`` and ``--keep-dup 1``, per replicate and pooled; bamCompare log2
(``--ignoreDuplicates --minMappingQuality 10``) per replicate and pooled, unsmoothed and with
``--smoothLength`` of 3 and 21 bins; the pooled smoothed ratio (numpy, 3 bins) and raw log CPM
on chipvi's counts.

chipvi: ``read_bams(max_per_position=RULE)`` for each ``--dup-rule`` (``auto`` = MACS3
``--keep-dup auto``; ``1`` = MACS3 ``--keep-dup 1`` and bamCompare ``--ignoreDuplicates``),
``ChIPVI`` trained with defaults, scored at levels ``library``, ``group`` and ``library_own``,
kinds ``log_fold_enrichment`` and ``log_fold_enrichment_lower``. Each chipvi row is judged
against the peers that drop duplicates by the same rule (and the numpy peers on the same
counts).

Real data (the bundled CSSQ set, thinned libraries): ``benchmarks/bench_real.py``.

Seeds: the default seeds 100-104 are fresh (never used while developing the model); seeds 1-6
were development seeds (training length, the 5 % quantile, the own-evidence design, the
multi-mapper rule, ``max_per_position`` and the group output were chosen on them) and are not
to be reported as evidence.

Usage::

    PYTHONPATH=src python benchmarks/bench_quality.py [--seeds 100 101 ...]
        [--scenario standard --scenario misspecified] [--chrom-length 1000000] [--write-results]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chipvi_run import quiet, train_default  # noqa: E402
from _peers import PeerCache, count_peers, missing_tools, peer_scores, versions_line  # noqa: E402
from _record import add_table_argument, markdown, report_saved, write_section  # noqa: E402
from _scoring import (  # noqa: E402
    artefact_rank,
    average_precision,
    replicate_concordance,
    roc_auc,
    spearman,
)
from chipvi._utils import parse_max_per_position  # noqa: E402
from chipvi.datasets import SCENARIOS as _SCENARIOS  # noqa: E402

quiet()
BIN = 200
FRAGMENT = 200
FRESH_SEEDS = (100, 101, 102, 103, 104)
#: Seeds used while developing the model: never report them as evidence.
DEVELOPMENT_SEEDS = (1, 2, 3, 4, 5, 6)
SCENARIOS = tuple(_SCENARIOS)
#: metric: higher is better?
HIGHER_BETTER = {
    "auprc_strong": True,
    "auprc_weak": True,
    "spearman_strong": True,
    "spearman_weak": True,
    "rep_pearson": True,
    "rep_spearman": True,
    "artefact_rank": False,
}
#: Metrics of the simulation whose replicates do not share every feature.
LIBRARY_HIGHER_BETTER = {"own_auprc_strong": True, "own_auprc_weak": True, "specific_auc": True}
#: chipvi outputs: name -> (kind, level, evidence of its two replicate columns).
CHIPVI_OUTPUTS = {
    "chipvi library": ("log_fold_enrichment", "library", "shared"),
    "chipvi library 5% lower": ("log_fold_enrichment_lower", "library", "shared"),
    "chipvi group": ("log_fold_enrichment", "group", "pooled"),
    "chipvi group 5% lower": ("log_fold_enrichment_lower", "group", "pooled"),
    "chipvi library_own": ("log_fold_enrichment", "library_own", "own"),
    "chipvi library_own 5% lower": ("log_fold_enrichment_lower", "library_own", "own"),
}


def simulate(out: Path, seed: int, scenario: str, chrom_length: int, **kwargs):
    """``chipvi.datasets.simulate`` with ``scenario=`` passed only when it is not "standard"."""
    from chipvi.datasets import simulate as _simulate

    if scenario != "standard":
        kwargs["scenario"] = scenario
    try:
        return _simulate(
            out, seed=seed, n_chroms=2, chrom_length=chrom_length, overwrite=True, **kwargs
        )
    except TypeError as err:
        if "scenario" in str(err):
            raise SystemExit(f"scenario {scenario!r}: this chipvi's simulate() has none") from err
        raise


def chipvi_scores(adata, train_seed: int, max_epochs: int | None) -> tuple[dict, float]:
    """Train ChIPVI with defaults on ``adata``; every output of :data:`CHIPVI_OUTPUTS`."""
    model, seconds = train_default(adata, train_seed, max_epochs)
    groups = adata.var["group"].astype(str).to_numpy()
    out = {}
    for name, (kind, level, evidence) in CHIPVI_OUTPUTS.items():
        try:
            score = model.get_denoised(kind=kind, level=level, return_numpy=True)
        except (ValueError, NotImplementedError) as err:  # a level this model lacks
            print(f"({name}: {err})")
            continue
        if level == "group":  # one column per group -> each library gets its group's
            names = list(getattr(model, "group_names", pd.unique(groups)))
            score = score[:, [names.index(g) for g in groups]]
        out[name] = (np.asarray(score, float), evidence)
    return out, seconds


def metrics(score, evidence, truth, group, strong, weak) -> dict:
    enriched = truth[f"enriched_{group}"].to_numpy(bool)
    lfe = truth[f"lfe_{group}"].to_numpy(float)
    art = truth["low_mappability"].to_numpy(bool) if "low_mappability" in truth else None
    row = {
        "auprc_strong": average_precision(enriched, score[:, strong]),
        "auprc_weak": average_precision(enriched, score[:, weak]),
        "spearman_strong": spearman(lfe, score[:, strong]),
        "spearman_weak": spearman(lfe, score[:, weak]),
        **replicate_concordance(score, evidence),
        "artefact_rank": np.nan,
    }
    if art is not None and art.any():
        row["artefact_rank"] = max(artefact_rank(art, score[:, j]) for j in range(2))
    return row


def library_metrics(score, truth, samples, strong, weak) -> dict:
    """Does each library's score carry its own evidence? (replicate-specific features)

    ``own_auprc_*``: AUPRC against the library's own enriched bins. ``specific_auc``: over bins
    of features carried by one replicate only, the probability that the first library's score
    minus the second's is larger where the first carries the feature (0.5: indistinguishable).
    """
    own = [truth[f"enriched_{s}"].to_numpy(bool) for s in samples]
    only_first, only_second = own[0] & ~own[1], own[1] & ~own[0]
    specific = only_first | only_second
    if not (only_first.any() and only_second.any()):
        raise SystemExit("the simulation has no feature in one replicate only: use a longer genome")
    return {
        "own_auprc_strong": average_precision(own[strong], score[:, strong]),
        "own_auprc_weak": average_precision(own[weak], score[:, weak]),
        "specific_auc": roc_auc(only_first[specific], (score[:, 0] - score[:, 1])[specific]),
    }


def bench_simulation(
    seed: int,
    scenario: str,
    args: argparse.Namespace,
    workdir: Path,
    cache: PeerCache,
    specific_fraction: float = 0.0,
) -> pd.DataFrame:
    """One simulation: every method's metrics, one row per (method, duplicate rule)."""
    import chipvi

    tag = f"{scenario}_{seed}" + (f"_specific{specific_fraction:g}" if specific_fraction else "")
    out = workdir / f"sim_{tag}"
    kwargs = {"replicate_specific_fraction": specific_fraction} if specific_fraction else {}
    sim = simulate(out, seed, scenario, args.chrom_length, **kwargs)
    sheet = pd.read_csv(sim.samplesheet)
    root = sim.samplesheet.parent
    samples = sheet["sample"].tolist()
    depth = sim.libraries.set_index("sample").loc[samples, "depth"].to_numpy()
    strong = int(np.argmax(depth))
    weak = 1 - strong
    group = sheet["group"].iloc[0]
    bins = sim.truth[["chrom", "start", "end"]]
    t0 = time.perf_counter()
    scores = peer_scores(
        [root / b for b in sheet["bam"]],
        [root / c for c in sheet["control"]],
        bins,
        out / "peers",
        cache,
        bin_size=BIN,
        fragment=FRAGMENT,
        genome_size=int(sum(sim.chrom_sizes.values())),
    )
    peer_s = time.perf_counter() - t0
    rows = []

    def add(name, score, evidence, dup, kind):
        if specific_fraction:
            m = library_metrics(score, sim.truth, samples, strong, weak)
        else:
            m = metrics(score, evidence, sim.truth, group, strong, weak)
        rows.append({"method": name, "dup": str(dup), "kind": kind, "evidence": evidence, **m})

    for name, p in scores.items():
        add(name, p.score, p.evidence, p.dup, "peer")
    train_s = []
    for rule in args.dup_rule:
        adata = chipvi.read_bams(sim.samplesheet, progress=False, max_per_position=rule)
        if adata.n_obs != len(bins):
            raise SystemExit(f"truth has {len(bins)} bins but the AnnData {adata.n_obs}")
        for name, p in count_peers(adata).items():
            add(name, p.score, p.evidence, rule, "peer")
        for train_seed in args.train_seeds:
            outputs, seconds = chipvi_scores(adata, train_seed, args.max_epochs)
            train_s.append(seconds)
            suffix = f" (train seed {train_seed})" if len(args.train_seeds) > 1 else ""
            for name, (score, evidence) in outputs.items():
                add(name + suffix, score, evidence, rule, "chipvi")
    what = f", {specific_fraction:.0%} of features in one replicate only" * bool(specific_fraction)
    print(
        f"\n## {scenario}, seed {seed}{what}: {len(bins)} bins, depths {depth.tolist()}; "
        f"peers {peer_s:.0f} s, chipvi train {', '.join(f'{t:.0f}' for t in train_s)} s",
        flush=True,
    )
    table = pd.DataFrame(rows)
    table.insert(0, "seed", seed)
    table.insert(0, "scenario", scenario + (" (specific)" if specific_fraction else ""))
    return table


def summarise(table: pd.DataFrame, higher: dict[str, bool]) -> tuple[pd.DataFrame, ...]:
    """Median and worst seed per method (and duplicate rule) and metric."""
    metrics_ = [m for m in higher if m in table and table[m].notna().any()]
    keys = ["method", "dup", "kind", "evidence"]
    grouped = table.groupby(keys, sort=False)
    med = grouped[metrics_].median()
    worst = pd.concat(
        [grouped[m].min() if higher[m] else grouped[m].max() for m in metrics_], axis=1
    )
    out = med.copy()
    for m in metrics_:
        out[m] = [
            "" if np.isnan(a) else f"{a:.3f} / {b:.3f}"
            for a, b in zip(med[m], worst[m], strict=True)
        ]
    out.insert(0, "n_seeds", grouped.size())
    return out, med, worst


def verdict(med: pd.DataFrame, worst: pd.DataFrame, higher: dict[str, bool]) -> pd.DataFrame:
    """Per chipvi output and metric: does it beat the best same-rule peer, on median and worst?

    Cells ``W``/``L``/``T`` (win, loss, exact tie) for median then worst seed (``W W``: wins
    on both), with the best peer's median in brackets. Shared and pooled outputs have no
    replicate concordance (left blank).
    """
    rows = {}
    for (method, dup, kind, evidence), _ in med.iterrows():
        if kind != "chipvi":
            continue
        cells = {}
        key = (method, dup, kind, evidence)
        for m in med.columns:
            ours_med, ours_worst = med.loc[key, m], worst.loc[key, m]
            if np.isnan(ours_med):
                cells[m] = ""
                continue
            peer_rows = [
                i
                for i in med.index
                if i[2] == "peer" and i[1] == dup and not np.isnan(med.loc[i, m])
            ]
            if not peer_rows:
                cells[m] = ""
                continue
            pm, pw = med.loc[peer_rows, m], worst.loc[peer_rows, m]
            best_med = pm.max() if higher[m] else pm.min()
            best_worst = pw.max() if higher[m] else pw.min()

            def win(a, b, m=m):
                if a == b:
                    return "T"
                return "W" if (a > b if higher[m] else a < b) else "L"

            cells[m] = f"{win(ours_med, best_med)} {win(ours_worst, best_worst)} ({best_med:.3f})"
        rows[(method, f"dup {dup}")] = cells
    return pd.DataFrame(rows).T


def report(table: pd.DataFrame, args) -> str:
    """Print and return (Markdown) the summary and verdict of every scenario."""
    parts = [
        f"Peers: {versions_line()}. chipvi counts with `max_per_position` = the `dup` column "
        "(`auto` = MACS3 `--keep-dup auto`; `1` = MACS3 `--keep-dup 1` and bamCompare "
        "`--ignoreDuplicates`); each chipvi row is judged against the peers of its rule. "
        f"Seeds {', '.join(map(str, sorted(table['seed'].unique())))} "
        f"(fresh; development seeds were {DEVELOPMENT_SEEDS[0]}-{DEVELOPMENT_SEEDS[-1]}); "
        f"{args.chrom_length:,} bp x 2 chromosomes. Cells: median / worst seed. Replicate "
        "concordance only for outputs from each library's own reads (blank: shared or pooled "
        "evidence, near 1 by construction)."
    ]
    print("\n" + parts[0])
    for scenario, sub in table.groupby("scenario", sort=False):
        higher = LIBRARY_HIGHER_BETTER if "(specific)" in scenario else HIGHER_BETTER
        summary, med, worst = summarise(sub, higher)
        ok = verdict(med, worst, higher)
        cells = [c.split()[:2] for c in ok.to_numpy().ravel() if c]
        wins = sum(c == ["W", "W"] for c in cells)
        losses = sum("L" in c for c in cells)
        shown = summary.reset_index().drop(columns=["kind"])
        text = (
            f"### {scenario}\n\n{markdown(shown, index=False)}\n\n"
            "chipvi vs the best same-rule peer (median, worst seed; best peer median):\n\n"
            f"{markdown(ok.rename_axis(['output', 'rule']))}\n\n"
            f"Cells won on median and worst seed: {wins} of {len(cells)}; with a loss: "
            f"{losses}.\n"
        )
        print("\n" + text, flush=True)
        parts.append(text)
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=list(FRESH_SEEDS),
        help="simulation seeds (default: fresh seeds 100-104; 1-6 were development seeds)",
    )  # fmt: skip
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, default=None,
        help="simulation scenario, repeatable (default: standard)",
    )  # fmt: skip
    parser.add_argument("--chrom-length", type=int, default=1_000_000, help="2 chromosomes")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="chipvi epochs (default: the model's)"
    )
    parser.add_argument(
        "--dup-rule", type=parse_max_per_position, nargs="+", default=["auto", 1],
        help="chipvi read_bams(max_per_position=...) rules, one training each: auto (MACS3 "
        "--keep-dup auto) and 1 (MACS3 --keep-dup 1, bamCompare --ignoreDuplicates)",
    )  # fmt: skip
    parser.add_argument(
        "--specific-seeds", type=int, nargs="*", default=[105],
        help="simulations with replicate-specific features, scored per library (none: skip)",
    )  # fmt: skip
    parser.add_argument("--specific-fraction", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--keep", help="keep simulations, peer outputs and the peer cache in this folder"
    )
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md")
    add_table_argument(parser, "bench_quality.tsv")
    args = parser.parse_args(argv)
    args.scenario = args.scenario or ["standard"]
    if report_saved(args, report, "Quality on simulations (bench_quality.py)"):
        return 0
    if missing_tools():
        print(f"missing peers {missing_tools()}: bash benchmarks/install_peers.sh", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="chipvi_quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    cache = PeerCache(workdir / "peer_cache")
    tables = []
    try:
        runs = [(s, sc, 0.0) for sc in args.scenario for s in args.seeds]
        runs += [(s, "standard", args.specific_fraction) for s in args.specific_seeds]
        for seed, scenario, fraction in runs:
            tables.append(bench_simulation(seed, scenario, args, workdir, cache, fraction))
            pd.concat(tables).to_csv(workdir / "bench_quality.tsv", sep="\t", index=False)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    body = report(pd.concat(tables, ignore_index=True), args)
    if args.write_results:
        write_section("Quality on simulations (bench_quality.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
