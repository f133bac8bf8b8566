"""Binning speed: chipvi.io.read_bam_bins against mosdepth, deepTools, a naive pysam loop and
the decompression-only ceiling, on one simulated BAM of ≥ 10 M reads, measured in the same run.

Usage::

    python benchmarks/bench_binning.py [--reads 10000000] [--threads 1 2] [--repeats 3]
        [--no-deeptools] [--genome sim6|hg38]

The BAM (ChIP library of ``chipvi.datasets.simulate`` on a 6-chromosome, 285 Mb genome; with
``--genome hg38``, uniform reads on GRCh38-sized chromosomes, 15.4 M bins, to measure memory
where the bin table dominates) is built once and cached in ``benchmarks/_work/``
(git-ignored). Every tool runs as a subprocess on the same file with the page cache warm; wall
time and peak RSS (``wait4``) are those of that process, and so is its CPU time (user +
system, all threads). The naive loop is
timed on a subsample and extrapolated. Prints one table (ratios are throughput relative to
mosdepth and to the ceiling at the same thread count) and chipvi's ratios to each peer tool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pysam

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
sys.path.insert(0, str(HERE.parent / "src"))

# A small "genome": bins and chromosomes enough for realistic per-chromosome work.
CONTIGS = [(f"chr{i + 1}", 60_000_000 - 7_000_000 * i) for i in range(6)]

# GRCh38 primary assembly chromosome lengths (chr1-22, X, Y), for ``--genome hg38``: a
# human-sized bin table (15.4 M bins of 200 bp), where the AnnData, not the reads, sets memory.
HG38 = [
    ("chr1", 248_956_422), ("chr2", 242_193_529), ("chr3", 198_295_559),
    ("chr4", 190_214_555), ("chr5", 181_538_259), ("chr6", 170_805_979),
    ("chr7", 159_345_973), ("chr8", 145_138_636), ("chr9", 138_394_717),
    ("chr10", 133_797_422), ("chr11", 135_086_622), ("chr12", 133_275_309),
    ("chr13", 114_364_328), ("chr14", 107_043_718), ("chr15", 101_991_189),
    ("chr16", 90_338_345), ("chr17", 83_257_441), ("chr18", 80_373_285),
    ("chr19", 58_617_616), ("chr20", 64_444_167), ("chr21", 46_709_983),
    ("chr22", 50_818_468), ("chrX", 156_040_895), ("chrY", 57_227_415),
]  # fmt: skip


def uniform_hg38_bam(n_reads: int) -> Path:
    """``n_reads`` single-end 50 bp reads at uniform positions of GRCh38-sized chromosomes.

    No biology: this BAM measures the cost of a human-sized bin table (cached)."""
    out = WORK / f"hg38_{n_reads}"
    bam = out / "uniform.bam"
    if bam.exists():
        return bam
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lengths = np.array([ln for _, ln in HG38], np.int64)
    tids = np.sort(rng.choice(len(HG38), n_reads, p=lengths / lengths.sum()))
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": n, "LN": ln} for n, ln in HG38],
    }
    tmp = bam.with_suffix(".part")
    with pysam.AlignmentFile(str(tmp), "wb", header=header) as fh:
        for tid in range(len(HG38)):
            n = int(np.count_nonzero(tids == tid))
            starts = np.sort(rng.integers(0, lengths[tid] - 50, n))
            reverse = rng.random(n) < 0.5
            mapq = rng.integers(0, 61, n)
            for i in range(n):
                a = pysam.AlignedSegment(fh.header)
                a.query_name = f"r{tid}_{i}"
                a.flag = 16 if reverse[i] else 0
                a.reference_id = tid
                a.reference_start = int(starts[i])
                a.mapping_quality = int(mapq[i])
                a.cigartuples = [(0, 50)]
                a.query_sequence = "ACGT" * 12 + "AC"
                a.query_qualities = pysam.qualitystring_to_array("I" * 50)
                fh.write(a)
    pysam.index(str(tmp), str(bam) + ".bai")
    tmp.rename(bam)
    return bam


def simulated_bam(n_reads: int) -> Path:
    """A ChIP BAM of ``n_reads`` single-end reads from chipvi.datasets.simulate (cached)."""
    out = WORK / f"sim_{n_reads}"
    bam = out / "G1_R1.bam"
    if not bam.exists():
        from chipvi.datasets import simulate

        t0 = time.perf_counter()
        # samtools' default BGZF level (6), not the simulator's fast level 1.
        sim = simulate(
            out,
            seed=0,
            chrom_sizes=dict(CONTIGS),
            n_groups=1,
            n_replicates=1,
            depths=(n_reads,),
            control_depths=(100_000,),
            compresslevel=6,
            overwrite=True,
        )
        bam = Path(sim.samplesheet).parent / "G1_R1.bam"
        print(f"simulated {bam} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return bam


def _cpu() -> float:
    """CPU seconds (user + system) of this process so far, all threads."""
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------------------------
# Child processes (one per measurement, so peak RSS is that of one tool)
# --------------------------------------------------------------------------------------------
def child_chipvi(bam: str, threads: int) -> dict:
    """Import chipvi and bin the BAM: what a user's process does, and nothing else.

    (Measuring the AnnData's size walks 1.3 M index strings, ~0.5 s: that is done in a
    separate run, ``child_chipvi_size``, so it does not count as chipvi's time.)
    """
    t0 = time.perf_counter()
    from chipvi.io import read_bam_bins

    t1, c1 = time.perf_counter(), _cpu()
    adata = read_bam_bins(bam, 200, threads=threads, progress=False)
    t2, c2 = time.perf_counter(), _cpu()
    return {
        "import_s": t1 - t0,
        "call_s": t2 - t1,
        "call_cpu_s": c2 - c1,
        "reads": int(adata.X.sum()),
    }


def child_chipvi_session(bam: str, threads: int) -> dict:
    """The call in a process that already has anndata loaded, as a scanpy/scvi-tools session does.

    ``chipvi.io`` imports pandas and anndata on first use, so in a fresh process the call above
    pays ~0.9 s for them; here they are imported before the clock starts.
    """
    import anndata  # noqa: F401

    from chipvi.io import read_bam_bins

    t1, c1 = time.perf_counter(), _cpu()
    adata = read_bam_bins(bam, 200, threads=threads, progress=False)
    t2, c2 = time.perf_counter(), _cpu()
    return {"call_s": t2 - t1, "call_cpu_s": c2 - c1, "reads": int(adata.X.sum())}


def child_chipvi_size(bam: str, threads: int) -> dict:
    """Size of the AnnData read_bam_bins returns: X, layers and obs (index strings included)."""
    from chipvi.io import read_bam_bins

    adata = read_bam_bins(bam, 200, threads=threads, progress=False)
    nbytes = (
        adata.X.nbytes
        + sum(v.nbytes for v in adata.layers.values())
        + adata.obs.memory_usage(deep=True).sum()
    )
    return {"adata_mib": nbytes / 2**20}


def child_ceiling(bam: str, threads: int) -> dict:
    """Inflate every BGZF block of the file with ``threads`` threads (no parsing)."""
    from chipvi.io._bgzf import (
        MAX_BLOCK,
        block_size,
        free_decompressor,
        inflate_all,
        new_decompressor,
    )

    t0, c0 = time.perf_counter(), _cpu()  # after imports, like the chipvi "call only" row
    size = os.path.getsize(bam)
    # Split the file into one byte range per thread at block boundaries.
    with open(bam, "rb") as fh:
        cuts = [0]
        for k in range(1, threads):
            target = size * k // threads
            fh.seek(target)
            window = np.frombuffer(fh.read(2 * MAX_BLOCK), np.uint8)
            i = 0
            while block_size(window, i, window.size) <= 0:
                i += 1
            cuts.append(target + i)
        cuts.append(size)

    def run(k: int) -> int:
        handle = new_decompressor()
        comp = np.empty(4 << 20, np.uint8)
        out = np.empty(MAX_BLOCK, np.uint8)
        total = 0
        with open(bam, "rb", buffering=0) as fh:
            fh.seek(cuts[k])
            pos, carry = cuts[k], 0
            while pos < cuts[k + 1] or carry:
                n = fh.readinto(
                    memoryview(comp)[carry : carry + min(comp.size - carry, cuts[k + 1] - pos)]
                )
                pos += n
                err, used, got = inflate_all(handle, comp, carry + n, out, True)
                assert err == 0
                total += got
                comp[: carry + n - used] = comp[used : carry + n]
                carry = carry + n - used
                if n == 0:
                    break
        free_decompressor(handle)
        return total

    with ThreadPoolExecutor(threads) as pool:
        inflated = sum(pool.map(run, range(threads)))
    return {"call_s": time.perf_counter() - t0, "call_cpu_s": _cpu() - c0, "inflated": inflated}


def child_naive(bam: str, n_reads: int) -> dict:
    """The per-read pysam loop (same counting rule, single-end) on the first ``n_reads`` reads."""
    import pysam

    t0 = time.perf_counter()
    with pysam.AlignmentFile(bam) as f:
        counts = {
            n: np.zeros(-(-ln // 200), np.int32)
            for n, ln in zip(f.references, f.lengths, strict=True)
        }
        lengths = dict(zip(f.references, f.lengths, strict=True))
        seen = 0
        for read in f.fetch(until_eof=True):
            seen += 1
            if seen > n_reads:
                break
            if read.flag & 0xB04:
                continue
            chrom = read.reference_name
            start = read.reference_end - 200 if read.is_reverse else read.reference_start
            centre = min(max(start + 100, 0), lengths[chrom] - 1)
            counts[chrom][centre // 200] += 1
    return {"call_s": time.perf_counter() - t0, "reads": min(seen, n_reads)}


def child_count(bam: str, threads: int) -> dict:
    """The counting part of read_bam_bins alone: every chromosome into preallocated columns."""
    from chipvi._bins import bin_count
    from chipvi.io._bam import open_bam
    from chipvi.io._binning import _check_params, _count_files

    t0, c0 = time.perf_counter(), _cpu()
    info = open_bam(bam)
    params = _check_params(200, 200, 0, True)
    n_bins = bin_count(info.contigs, 200)
    x = np.zeros(n_bins, np.int32)
    mapq = np.zeros(n_bins, np.float32)
    totals, _ = _count_files([info], info.contigs, [params], [(x, mapq)], threads, False)
    return {
        "call_s": time.perf_counter() - t0,
        "call_cpu_s": _cpu() - c0,
        "reads": int(totals.sum()),
    }


def child_fixed(bam: str, threads: int) -> dict:
    """What the "chipvi read_bam_bins" process pays besides the call's own work: the imports of
    chipvi.io, pandas and anndata and numba's one-off set-up (its first compiled call). No BAM
    is read; timing the whole process adds interpreter start-up and exit."""
    import anndata  # noqa: F401

    from chipvi.io._binning import free_decompressor, new_decompressor

    free_decompressor(new_decompressor())
    return {}


def child_simulate(genome: str, n_reads: int) -> dict:
    make = uniform_hg38_bam if genome == "hg38" else simulated_bam
    return {"bam": str(make(n_reads))}


CHILDREN = {
    "chipvi": child_chipvi,
    "chipvi_session": child_chipvi_session,
    "chipvi_size": child_chipvi_size,
    "count": child_count,
    "fixed": child_fixed,
    "ceiling": child_ceiling,
    "naive": child_naive,
    "simulate": child_simulate,
}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def measure(cmd: list[str]) -> tuple[float, float, str, float]:
    """Run ``cmd``; return (wall seconds, its own peak RSS in MiB, stdout, CPU seconds).

    Peak RSS and CPU time (user + system, all threads) are the child's own, from ``wait4``.
    """
    out_path, err_path = WORK / "child.out", WORK / "child.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed:\n{err_path.read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out_path.read_text(), usage.ru_utime + usage.ru_stime


def run_child(kind: str, *args) -> tuple[float, float, dict, float]:
    wall, rss, out, cpu = measure([sys.executable, __file__, "--child", kind, *map(str, args)])
    return wall, rss, json.loads(out.strip().splitlines()[-1]), cpu


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reads", type=int, default=10_000_000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--naive-reads", type=int, default=1_000_000)
    ap.add_argument("--no-deeptools", action="store_true")
    ap.add_argument(
        "--genome",
        choices=("sim6", "hg38"),
        default="sim6",
        help="sim6: chipvi.datasets.simulate on 6 chromosomes (285 Mb); hg38: uniform reads on "
        "GRCh38-sized chromosomes (3.1 Gb), where the bin table sets memory",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of every tool but deepTools and the naive loop; each row is the median run",
    )
    ap.add_argument(
        "--write-results",
        action="store_true",
        help="replace the 'Binning' section of benchmarks/RESULTS.md with this run's table",
    )
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, bam, n = args.child
        print(json.dumps(CHILDREN[kind](bam, int(n))))
        return

    WORK.mkdir(exist_ok=True)
    # Simulated in a child: the driver stays small, so its memory never shows in a child's RSS.
    bam = Path(run_child("simulate", args.genome, args.reads)[2]["bam"])
    with pysam.AlignmentFile(str(bam)) as f:
        n = f.mapped + f.unmapped  # every record: the unit of reads/s for all tools
        # Reads the counting rule keeps in this BAM: all (single-end, no unmapped/secondary/...).
        expected = f.mapped
    # Warm the page cache and numba's compilation cache, so no tool pays for either.
    with open(bam, "rb") as fh:
        while fh.read(1 << 24):
            pass
    adata_mib = run_child("chipvi_size", bam, 1)[2]["adata_mib"]
    run_child("ceiling", bam, 1)
    load_before = os.getloadavg()

    _, _, naive, _ = run_child("naive", bam, args.naive_reads)
    naive_rate = naive["reads"] / naive["call_s"]
    nan = float("nan")
    rows = []  # (tool, threads, reads/s, peak RSS MiB, CPU s, note)
    summary = []

    def timed_in_process(tool: str, t: int, res: dict, rss: float, note: str) -> tuple:
        """A row for a child that timed its own call (``call_s``, ``call_cpu_s``)."""
        return (tool, t, n / res["call_s"], rss, res["call_cpu_s"], note)

    def check_reads(res: dict) -> None:
        if res["reads"] != expected:
            raise RuntimeError(f"chipvi counted {res['reads']} reads, expected {expected}")

    def median(runs: list, key) -> tuple:
        """The run with the median ``key`` (the middle one of an odd number of runs)."""
        return sorted(runs, key=key)[(len(runs) - 1) // 2]

    def repeat(run, *run_args) -> list:
        """``run(*run_args)``, ``--repeats`` times."""
        return [run(*run_args) for _ in range(args.repeats)]

    def spread(values) -> str:
        values = sorted(values)
        return f"median of {len(values)}: {values[0]:.2f}-{values[-1]:.2f} s"

    def process_row(tool: str, t: int, runs: list, note: str = "") -> tuple:
        """A row for the median of runs timed as whole processes (``measure``/``run_child``)."""
        wall, rss, _, cpu = median(runs, lambda r: r[0])
        note = f"process wall time; {note}{spread(r[0] for r in runs)}"
        return (tool, t, n / wall, rss, cpu, note)

    sheet = WORK / "chipvi_bin_samplesheet.csv"
    sheet.write_text(f"sample,bam,control,target,group,replicate\nG1_R1,{bam},,chip,G1,1\n")
    # Thread-independent: start-up and exit of a process that bins nothing.
    fixed_runs = repeat(run_child, "fixed", bam, 1)
    fixed_wall = median(fixed_runs, lambda r: r[0])[0]
    summary.append(
        f"fixed cost of the 'chipvi read_bam_bins' process, binning nothing (interpreter "
        f"start, imports of chipvi.io, pandas, anndata, numba's set-up, exit): {fixed_wall:.2f} s "
        f"({spread(r[0] for r in fixed_runs)})"
    )

    for t in args.threads:
        block = {}
        runs = repeat(run_child, "ceiling", bam, t)
        _, rss, res, _ = median(runs, lambda r: r[2]["call_s"])
        block["ceiling"] = timed_in_process(
            "decompression ceiling (inflate+CRC)", t, res, rss, "in-process time"
        )
        mosdepth = ["mosdepth", "-n", "--by", "200", "-t", str(t), str(WORK / f"mosdepth_t{t}")]
        runs = repeat(measure, [*mosdepth, str(bam)])
        block["mosdepth"] = process_row("mosdepth -n --by 200 -t T", t, runs)
        # -x (fast mode: no CIGAR walk, no mate-overlap correction) is mosdepth's setting for
        # counting reads per bin, the work chipvi does.
        runs = repeat(measure, [*mosdepth[:1], "-x", *mosdepth[1:], str(bam)])
        block["mosdepth_x"] = process_row("mosdepth -x -n --by 200 -t T", t, runs)
        runs = repeat(run_child, "chipvi", bam, t)
        for r in runs:
            check_reads(r[2])
        block["process"] = process_row(
            "chipvi read_bam_bins", t, runs, f"AnnData {adata_mib:.0f} MiB; "
        )
        _, rss, res, _ = median(runs, lambda r: r[2]["call_s"])
        block["call"] = timed_in_process(
            "chipvi read_bam_bins (call only)",
            t,
            res,
            rss,
            f"imports took {res['import_s']:.1f} s more; {spread(r[2]['call_s'] for r in runs)}",
        )
        # The command line, as a user runs it next to `multiBamSummary bins -o x.npz`: a
        # sample sheet of this one BAM (no control) in, an .h5ad file out.
        command = [sys.executable, "-m", "chipvi", "bin", str(sheet), "--threads", str(t)]
        command += ["-o", str(WORK / f"chipvi_bin_t{t}.h5ad"), "--overwrite", "-q"]
        block["cli"] = process_row("chipvi bin command (writes .h5ad)", t, repeat(measure, command))
        runs = repeat(run_child, "chipvi_session", bam, t)
        for r in runs:
            check_reads(r[2])
        _, rss, res, _ = median(runs, lambda r: r[2]["call_s"])
        block["session"] = timed_in_process(
            "chipvi read_bam_bins (anndata loaded)",
            t,
            res,
            rss,
            f"call after `import anndata`; {spread(r[2]['call_s'] for r in runs)}",
        )
        runs = repeat(run_child, "count", bam, t)
        _, rss, res, _ = median(runs, lambda r: r[2]["call_s"])
        block["count"] = timed_in_process(
            "chipvi counting only (no AnnData)", t, res, rss, "in-process time"
        )
        if not args.no_deeptools:
            # One run: it takes a minute or more.
            deeptools = ["multiBamSummary", "bins", "--binSize", "200", "-p", str(t), "-b"]
            deeptools += [str(bam), "-o", str(WORK / f"multiBamSummary_t{t}.npz")]
            block["deeptools"] = process_row(
                "deepTools multiBamSummary bins", t, [measure(deeptools)]
            )
        block["naive"] = (
            "naive pysam loop",
            t,
            naive_rate,
            nan,
            nan,
            f"1 thread, first {naive['reads']:,} reads",
        )
        if "deeptools" in block:
            deeptools_wall = n / block["deeptools"][2]
            summary.append(
                f"{t} thread(s): deepTools took {deeptools_wall:.1f} s, so that process cannot "
                f"be more than {deeptools_wall / fixed_wall:.1f}x faster (its fixed cost alone, "
                f"counting in no time)"
            )
        mosdepth_rate, ceiling_rate = block["mosdepth"][2], block["ceiling"][2]
        rows += [(*r, r[2] / mosdepth_rate, r[2] / ceiling_rate) for r in block.values()]
        for other in ("mosdepth", "mosdepth_x", "deeptools", "naive"):
            if other in block:
                summary.append(
                    f"{t} thread(s): chipvi vs {block[other][0]}: command line "
                    f"{block['cli'][2] / block[other][2]:.2f}x, process "
                    f"{block['process'][2] / block[other][2]:.2f}x, call only "
                    f"{block['call'][2] / block[other][2]:.2f}x, call with anndata loaded "
                    f"{block['session'][2] / block[other][2]:.2f}x"
                )

    load_after = os.getloadavg()
    with pysam.AlignmentFile(str(bam)) as f:
        contig_lengths = f.lengths
    source = "uniform reads, GRCh38 sizes" if args.genome == "hg38" else "chipvi.datasets.simulate"
    head = (
        f"BAM {bam.name} ({source}): {n:,} single-end 50 bp reads, "
        f"{bam.stat().st_size / 2**20:.0f} MiB, {len(contig_lengths)} chromosomes, "
        f"{sum(-(-ln // 200) for ln in contig_lengths):,} bins of 200 bp; cpus {os.cpu_count()}; "
        f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after."
    )
    table = [
        f"| {'tool':38} | threads | Mreads/s | peak RSS MiB | CPU s | vs mosdepth | vs ceiling "
        f"| note |",
        f"|{'-' * 40}|--------:|---------:|-------------:|------:|------------:|-----------:"
        f"|------|",
    ]
    for tool, t, rate, rss, cpu, note, vs_m, vs_c in rows:
        table.append(
            f"| {tool:38} | {t:7} | {rate / 1e6:8.2f} | {rss:12.0f} | {cpu:5.1f} | {vs_m:10.2f}x | "
            f"{vs_c:9.0%} | {note} |"
        )
    cpu_note = (
        "CPU s: user + system seconds of the whole process (process rows, from wait4) or of "
        "the timed part (in-process rows)."
    )
    print(f"\n{head}\n" + "\n".join(table) + f"\n\n{cpu_note}\n" + "\n".join(summary))
    if args.write_results:
        from _record import write_section

        body = "\n".join([head, "", *table, "", cpu_note, "", *(f"    {s}" for s in summary)])
        print(f"wrote {write_section('Binning (bench_binning.py)', body)}")


if __name__ == "__main__":
    main()
