"""Simulator benchmark: write speed, and how hard the default simulation is for peer tools.

Usage::

    python benchmarks/bench_simulate.py [--reads 10000000] [--skip-peers]

1. Speed: ``chipvi.datasets.simulate`` writing ``--reads`` ChIP reads (plus 1 % input) on a
   genome of 2.5 bp per read, one core; its bulk BAM writer alone and the per-read
   ``pysam.AlignedSegment`` writer on up to 1 M sorted 50 bp reads; reads/s and peak RSS
   (each measured in a fresh subprocess).
2. Difficulty: on the default simulation, the area under the precision-recall curve for
   enriched 200 bp bins of MACS3 fold enrichment and of deepTools ``bamCompare`` log2 ratio,
   per library, run and scored as every benchmark does (``_peers.py``, ``_scoring.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _peers, _scoring

SPEED_CHILD = """
import json, resource, sys, time
import chipvi.datasets as d
out, reads = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
d.simulate(out, chrom_length=max(reads * 5 // 2, 1_000_000), depths=(reads * 6 // 10, reads * 4 // 10),
           control_depths=(reads // 200, reads // 200))
wall = time.perf_counter() - t
print(json.dumps({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

PYSAM_CHILD = """
import json, resource, sys, time
import numpy as np, pysam
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
pos = np.sort(rng.integers(0, 50_000_000, n))
seq = "ACGT" * 12 + "AC"
qual = pysam.qualitystring_to_array("I" * 50)
t = time.perf_counter()
header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 50_000_100}]}
with pysam.AlignmentFile(out, "wb", header=header) as bam:
    for i, p in enumerate(pos.tolist()):
        a = pysam.AlignedSegment(bam.header)
        a.query_name = f"r{i:010d}"
        a.reference_id = 0
        a.reference_start = p
        a.mapping_quality = 60
        a.cigartuples = [(0, 50)]
        a.flag = 16 if i % 2 else 0
        a.query_sequence = seq
        a.query_qualities = qual
        bam.write(a)
pysam.index(out)
wall = time.perf_counter() - t
print(json.dumps({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


BULK_CHILD = """
import json, resource, sys, time
import numpy as np, pysam
from chipvi.datasets._bam_writer import BamWriter
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
pos = np.sort(rng.integers(0, 50_000_000, n))
reference = rng.choice(np.array([1, 2, 4, 8], dtype=np.uint8), 50_000_100)
t = time.perf_counter()
with BamWriter(out, {"chr1": 50_000_100}, read_length=50) as bam:
    bam.write(0, pos, np.where(np.arange(n) % 2, 16, 0), np.full(n, 60), np.arange(n), reference)
pysam.index(out)
wall = time.perf_counter() - t
print(json.dumps({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(reads: int, work: Path) -> None:
    sim = _child(SPEED_CHILD, str(work / "speed"), str(reads))
    total = reads + 2 * (reads // 200)
    n_pysam = min(reads, 1_000_000)
    naive = _child(PYSAM_CHILD, str(work / "naive.bam"), str(n_pysam))
    bulk = _child(BULK_CHILD, str(work / "bulk.bam"), str(n_pysam))
    rows = [
        ("chipvi.datasets.simulate", total, sim["wall"], total / sim["wall"], sim["rss"] / 1024),
        (
            "BamWriter alone (bulk records + index)",
            n_pysam,
            bulk["wall"],
            n_pysam / bulk["wall"],
            bulk["rss"] / 1024,
        ),
        (
            "pysam AlignedSegment loop (+ index)",
            n_pysam,
            naive["wall"],
            n_pysam / naive["wall"],
            naive["rss"] / 1024,
        ),
    ]
    print("\n### Write speed (1 process; simulate includes drawing reads, sorting, indexing)")
    print("| writer | reads | wall s | reads/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, n, wall, rate, rss in rows:
        print(f"| {name} | {n:,} | {wall:.1f} | {rate:,.0f} | {rss:,.0f} |")
    print(
        f"\nratios (reads/s) vs the pysam loop: simulate {rows[0][3] / rows[2][3]:.1f}x, "
        f"writer alone {rows[1][3] / rows[2][3]:.1f}x"
    )


def difficulty(work: Path, **kwargs) -> None:
    import chipvi
    from _peers import PeerCache, peer_scores, versions_line
    from _scoring import average_precision

    sim = chipvi.datasets.simulate(work / "default", **kwargs)
    sheet = pd.read_csv(sim.samplesheet)
    folder = sim.samplesheet.parent
    peers = peer_scores(
        [folder / p for p in sheet["bam"]],
        [folder / p for p in sheet["control"]],
        sim.truth[["chrom", "start", "end"]],
        work / "peers",
        PeerCache(None),
        bin_size=200,
        fragment=200,
        genome_size=sum(sim.chrom_sizes.values()),
        pooled=False,
        bamcompare_smooth=(0,),
        keep_dup=("auto",),
    )
    fe, ratio = peers["MACS3 log2 FE keep-dup auto"], peers["bamCompare log2"]
    print(
        "\n### Difficulty of the default simulation (AUPRC, enriched 200 bp bins; "
        f"{versions_line()}; peers as in benchmarks/_peers.py)"
    )
    print("| library | ChIP reads | enriched bins | MACS3 log2 FE | bamCompare log2 |")
    print("|---|---|---|---|---|")
    for j, row in enumerate(sheet.itertuples()):
        y = sim.truth[f"enriched_{row.group}"].to_numpy()
        depth = int(sim.libraries.set_index("sample").loc[row.sample, "depth"])
        print(
            f"| {row.sample} | {depth:,} | {int(y.sum()):,} | "
            f"{average_precision(y, fe.score[:, j]):.3f} | "
            f"{average_precision(y, ratio.score[:, j]):.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=10_000_000)
    parser.add_argument("--skip-peers", action="store_true", help="speed table only")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="replace the 'Simulator' section of benchmarks/RESULTS.md with this run's tables",
    )
    args = parser.parse_args()
    from _record import tee, write_section

    work = Path(tempfile.mkdtemp(prefix="chipvi_bench_sim_"))
    try:
        with tee() as tables:
            speed(args.reads, work)
            if not args.skip_peers:
                missing = [t for t in ("macs3", "bamCompare") if shutil.which(t) is None]
                if missing:
                    print(f"\n(difficulty table skipped: {missing} not installed)")
                else:
                    difficulty(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.write_results:
        print(f"wrote {write_section('Simulator (bench_simulate.py)', tables.getvalue())}")
    print(f"\n(finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")


if __name__ == "__main__":
    main()
