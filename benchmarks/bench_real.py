"""Real-data benchmark: one ChIP library thinned to 10 %, scored against held-out truth.

On the bundled CSSQ H3K4me3 data (``chipvi.datasets.cssq_chr19_samplesheet``; chr19 slice) and,
with ``--ctcf FOLDER``, the CTCF chr22 data (a folder with ``samplesheet.csv``, e.g.
``/work/shared/data/macs3_ctcf_chr22``): for each ChIP library and thinning seed the library is
thinned to ``--fraction`` (10 %; each read, or read pair, kept with that probability, seeded)
and written as a new BAM with pysam; the reads left out form a second BAM. Two truths:

* **A, replicate**: the other replicate of the cell type at full depth (not for a library
  without a replicate);
* **B, count splitting**: the thinned library's own remaining 90 % (independent of the 10 %
  kept under Poisson sampling).

Both are binned like chipvi's input and smoothed over 3 bins; Pearson uses ``log1p`` of the
smoothed counts. Scores: Spearman, Pearson, AUPRC of the top 10 % of the truth (bins strictly
above its 90 % quantile; ``benchmarks/_scoring.py``).

Methods on the thinned library and its input (peers as defined in ``benchmarks/_peers.py``):
raw log CPM; bamCompare log2 ratio, unsmoothed and with ``--smoothLength`` of 3 and 21 bins;
MACS3 log2 FE (``--keep-dup auto`` and ``1``); the smoothed ratio (numpy, 3 bins; with one
library there is nothing to pool). chipvi: ``read_bams`` on a sample sheet with the thinned
library alone in its group, ``ChIPVI`` defaults, ``get_denoised`` at levels ``library`` and
``library_own``; a second training with the full-depth replicate in the group is scored
against truth B only (truth A is then in its training data).

Usage::

    PYTHONPATH=src python benchmarks/bench_real.py [--seeds 1 2 3] [--thin HESC_R1 ...]
        [--ctcf /work/shared/data/macs3_ctcf_chr22] [--write-results]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chipvi_run import quiet, train_default  # noqa: E402
from _peers import (  # noqa: E402
    PeerCache,
    count_peers,
    missing_tools,
    moving_average,
    peer_scores,
    single_chrom_bam,
    versions_line,
)
from _record import add_table_argument, markdown, report_saved, write_section  # noqa: E402
from _scoring import average_precision, pearson, spearman, top_fraction  # noqa: E402
from chipvi._utils import parse_max_per_position  # noqa: E402

quiet()
BIN = 200
FRAGMENT = 200
TRUTH_WINDOW = 3
TOP = 0.1
#: chipvi outputs scored: name -> (kind, level).
CHIPVI_OUTPUTS = {
    "chipvi library": ("log_fold_enrichment", "library"),
    "chipvi library 5% lower": ("log_fold_enrichment_lower", "library"),
    "chipvi library_own": ("log_fold_enrichment", "library_own"),
    "chipvi library_own 5% lower": ("log_fold_enrichment_lower", "library_own"),
}
METRICS = ("spearman", "pearson", "auprc_top10")


def thin_bam(src: Path, kept: Path, rest: Path, fraction: float, seed: int) -> tuple[int, int]:
    """Split ``src`` into ``kept`` (each read or pair with probability ``fraction``) and ``rest``.

    The draw is a seeded hash of the read name, so both mates of a pair go the same way and
    the same seed gives the same split. Both outputs are indexed. Returns the record counts.
    """
    import pysam

    scale = float(2**32)
    n = [0, 0]
    with pysam.AlignmentFile(str(src), "rb") as bam:
        with (
            pysam.AlignmentFile(str(kept), "wb", template=bam) as a,
            pysam.AlignmentFile(str(rest), "wb", template=bam) as b,
        ):
            for read in bam.fetch(until_eof=True):
                u = zlib.crc32(f"{seed}:{read.query_name}".encode()) / scale
                keep = u < fraction
                (a if keep else b).write(read)
                n[0 if keep else 1] += 1
    for path in (kept, rest):
        pysam.index(str(path))
    return n[0], n[1]


def _dataset(name: str, folder: Path) -> dict:
    """Sample sheet (absolute paths), chromosome and region of a data set."""
    sheet = pd.read_csv(folder / "samplesheet.csv", dtype={"replicate": str})
    for col in ("bam", "control"):
        sheet[col] = [str((folder / p).resolve()) for p in sheet[col]]
    if name == "cssq":
        from chipvi.datasets import CSSQ_REGION

        return {"sheet": sheet, "chroms": ["chr19"], "region": CSSQ_REGION.replace(",", "")}
    return {"sheet": sheet, "chroms": None, "region": None}


def _read_region(data: dict, adata) -> str:
    """The data set's region, or the span of bins with ChIP or control reads."""
    if data["region"]:
        return data["region"]
    x = (
        np.asarray(adata.X.sum(axis=1)).ravel()
        + np.asarray(adata.layers["control"].sum(axis=1)).ravel()
    )
    rows = np.flatnonzero(x > 0)
    chrom = adata.obs["chrom"].astype(str).to_numpy()[rows]
    if len(set(chrom)) != 1:
        raise SystemExit("--ctcf data must lie on one chromosome")
    return f"{chrom[0]}:{adata.obs['start'].iloc[rows[0]]}-{adata.obs['end'].iloc[rows[-1]]}"


def _bin(sheet: pd.DataFrame, data: dict, rule, region: str | None):
    import chipvi

    kwargs = {"chroms": data["chroms"]} if data["chroms"] else {}
    adata = chipvi.read_bams(sheet, progress=False, max_per_position=rule, **kwargs)
    if region:
        chipvi.pp.filter_region(adata, region)
    return adata


def _train(adata, seed: int, max_epochs: int | None) -> dict[str, np.ndarray]:
    model, _ = train_default(adata, seed, max_epochs)
    return {
        name: np.asarray(model.get_denoised(kind=k, level=lv, return_numpy=True), float)[:, 0]
        for name, (k, lv) in CHIPVI_OUTPUTS.items()
    }


def _scores(truth_counts: np.ndarray, chrom: np.ndarray, score: np.ndarray) -> dict:
    smooth = moving_average(truth_counts, chrom, TRUTH_WINDOW)
    return {
        "spearman": spearman(smooth, score),
        "pearson": pearson(np.log1p(smooth), score),
        "auprc_top10": average_precision(top_fraction(smooth, TOP), score),
    }


def bench_library(
    data_name: str, data: dict, sample: str, seed: int, args, work: Path, cache: PeerCache
) -> list[dict]:
    """Thin one library with one seed; every method against truths A and B."""
    sheet = data["sheet"]
    row = sheet.set_index("sample").loc[sample]
    reps = sheet[(sheet["group"] == row["group"]) & (sheet["sample"] != sample)]
    out = work / f"{data_name}_{sample}_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    thinned, rest = out / "thinned.bam", out / "rest.bam"
    n_kept, n_rest = thin_bam(Path(row["bam"]), thinned, rest, args.fraction, seed)
    chip_peer, control_peer = thinned, Path(row["control"])
    if data["chroms"]:  # one contig in the header: bamCompare's sampling is then fast
        chrom_name = data["chroms"][0]
        chip_peer = single_chrom_bam(thinned, out / "thinned_one_contig.bam", chrom_name)
        control_peer = single_chrom_bam(
            control_peer, work / "controls" / f"{data_name}_{control_peer.name}", chrom_name
        )

    def entry(name, bam, frac):
        e = row.to_dict() | {"sample": name, "bam": str(bam)}
        if "depth" in sheet:  # full-library totals: scale to the part kept
            e["depth"] = max(1, round(row["depth"] * frac))
        return e

    kept_frac = n_kept / (n_kept + n_rest)
    alone = pd.DataFrame([entry(f"{sample}_thin", thinned, kept_frac)])
    adata = _bin(alone, data, args.dup_rule, data["region"])
    region = _read_region(data, adata)
    if not data["region"]:
        data["region"] = region
        import chipvi

        chipvi.pp.filter_region(adata, region)
    chrom = adata.obs["chrom"].astype(str).to_numpy()
    # Truths: B = the rest of this library, A = the other replicate at full depth.
    truth_sheet = pd.DataFrame(
        [entry(f"{sample}_rest", rest, 1 - kept_frac)]
        + [r.to_dict() for _, r in reps.head(1).iterrows()]
    )
    truth = _bin(truth_sheet, data, args.dup_rule, region)
    truth_x = np.asarray(truth.X.toarray() if hasattr(truth.X, "toarray") else truth.X, float)
    truths = {"B count split": truth_x[:, 0]}
    if len(reps):
        truths["A replicate"] = truth_x[:, 1]
    # Methods.
    t0 = time.perf_counter()
    bamregion = region.replace("-", ":")
    peers = peer_scores(
        [chip_peer], [control_peer], adata.obs, out / "peers", cache,
        bin_size=BIN, fragment=FRAGMENT, genome_size=_region_length(region),
        region=bamregion, pooled=False,
    )  # fmt: skip
    peers |= count_peers(adata)
    methods = {name: (p.score[:, 0], "") for name, p in peers.items()}
    peer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for name, score in _train(adata, args.train_seed, args.max_epochs).items():
        methods[name] = (score, "chipvi")
    if len(reps):
        with_rep = _bin(
            pd.concat([alone, reps.head(1)], ignore_index=True), data, args.dup_rule, region
        )
        for name, score in _train(with_rep, args.train_seed, args.max_epochs).items():
            methods[f"{name} +replicate"] = (score, "chipvi leak-A")
    train_s = time.perf_counter() - t0
    print(
        f"{data_name} {sample} seed {seed}: {adata.n_obs} bins, {n_kept} of "
        f"{n_kept + n_rest} reads kept; peers {peer_s:.0f} s, chipvi {train_s:.0f} s",
        flush=True,
    )
    rows = []
    for truth_name, counts in truths.items():
        for name, (score, kind) in methods.items():
            r = {"data": data_name, "library": sample, "seed": seed, "truth": truth_name,
                 "method": name, "kind": "chipvi" if kind else "peer"}  # fmt: skip
            if kind == "chipvi leak-A" and truth_name.startswith("A"):
                r |= dict.fromkeys(METRICS, np.nan)  # the truth is in its training group
            else:
                r |= _scores(counts, chrom, score)
            rows.append(r)
    return rows


def _region_length(region: str) -> int:
    start, end = region.split(":")[1].split("-")
    return int(end) - int(start)


def report(table: pd.DataFrame, args) -> str:
    """Median / worst (over libraries and seeds) per data set, truth, method and metric."""
    parts = [
        f"Peers: {versions_line()}. chipvi and the truths count with `max_per_position="
        f"{args.dup_rule!r}`; {args.fraction:.0%} of one library kept (thinning seeds "
        f"{', '.join(map(str, args.seeds))}); truth smoothed over {TRUTH_WINDOW} bins; AUPRC "
        f"of the top {TOP:.0%} of the truth. Cells: median / worst over libraries x seeds. "
        "`+replicate`: chipvi trained with the full-depth replicate in the group (not scored "
        "against truth A, which it saw)."
    ]
    print("\n" + parts[0])
    for (data, truth), sub in table.groupby(["data", "truth"], sort=False):
        g = sub.groupby(["method", "kind"], sort=False)[list(METRICS)]
        med, worst = g.median(), g.min()
        shown = med.copy().astype(object)
        for m in METRICS:
            shown[m] = [
                "" if np.isnan(a) else f"{a:.3f} / {b:.3f}"
                for a, b in zip(med[m], worst[m], strict=True)
            ]
        shown.insert(0, "n", g.size())
        peers = med.xs("peer", level="kind")
        lines = []
        for (method, kind), r in med.iterrows():
            if kind != "chipvi" or r.isna().all():
                continue
            beaten = [f"{m}: best peer {peers[m].idxmax()} {peers[m].max():.3f}"
                      for m in METRICS if r[m] <= peers[m].max()]  # fmt: skip
            lines.append(f"- {method}: " + ("beats every peer on the median" if not beaten
                         else "loses on " + "; ".join(beaten)))  # fmt: skip
        text = (
            f"### {data}, truth {truth}\n\n{markdown(shown.reset_index(), index=False)}\n\n"
            + "\n".join(lines)
            + "\n"
        )
        print("\n" + text, flush=True)
        parts.append(text)
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="thinning seeds")
    parser.add_argument("--thin", nargs="*", default=None, help="libraries (default: all)")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--ctcf", help="folder of the CTCF chr22 data (samplesheet.csv)")
    parser.add_argument("--no-cssq", action="store_true", help="skip the bundled CSSQ data")
    parser.add_argument(
        "--dup-rule", type=parse_max_per_position, default="auto",
        help="read_bams(max_per_position=...) for chipvi, the numpy peers and the truths",
    )  # fmt: skip
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", help="keep BAMs, peer outputs and the peer cache here")
    parser.add_argument("--write-results", action="store_true")
    add_table_argument(parser, "bench_real.tsv")
    args = parser.parse_args(argv)
    if report_saved(args, report, "Real data, thinned library (bench_real.py)"):
        return 0
    if missing_tools():
        print(f"missing peers {missing_tools()}: bash benchmarks/install_peers.sh", file=sys.stderr)
        return 2
    import torch

    from chipvi.datasets import cssq_chr19_samplesheet

    torch.set_num_threads(args.threads)
    sets = {} if args.no_cssq else {"cssq": _dataset("cssq", cssq_chr19_samplesheet().parent)}
    if args.ctcf:
        sets["ctcf"] = _dataset("ctcf", Path(args.ctcf))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="chipvi_real_"))
    work.mkdir(parents=True, exist_ok=True)
    cache = PeerCache(work / "peer_cache")
    rows = []
    try:
        for name, data in sets.items():
            samples = [s for s in data["sheet"]["sample"] if args.thin is None or s in args.thin]
            for sample in samples:
                for seed in args.seeds:
                    rows += bench_library(name, data, sample, seed, args, work, cache)
                    pd.DataFrame(rows).to_csv(work / "bench_real.tsv", sep="\t", index=False)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    body = report(pd.DataFrame(rows), args)
    if args.write_results:
        write_section("Real data, thinned library (bench_real.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
