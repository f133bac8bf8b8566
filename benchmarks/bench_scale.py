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

With ``--disk-bins``, the out-of-core path instead: for each size, simulated BAMs (4 ChIP
libraries and one shared control, uniform reads, ``--reads-per-bin`` per library and bin,
cached in ``benchmarks/_work/``) are binned at 25 bp by ``read_bams`` into a zarr store
(``out=``) and, up to ``--memory-max`` bins, into memory; the store is then aggregated to
200 bp (``pp.aggregate_bins``, store to store). Each step runs in its own process: wall time
and that process's peak RSS (``wait4``; the BAMs are simulated in a child too, so the driver's
own peak never enters a child's). A plot of both against bins goes next to RESULTS.md.

With ``--model-bins``, the model from disk beside the model in memory: for each size the
simulated counts above (chromosomes of up to ``--chrom-bins`` bins, 10 M by default: GRCh38
chr1 at 25 bp) are drawn and written to a zarr store a chromosome at a time (each seeded
apart, so the writer's memory is one chromosome's at any genome size); then one process
reads the store whole (``to_memory``) and one works on it in place (``ChIPVI(store)``,
``add_posterior(store)``), each timing the model set-up, one training epoch and the
posterior pass, with its peak RSS after each stage (``ru_maxrss``).

Usage::

    python benchmarks/bench_scale.py --bins 3000000 --libraries 2 [--defaults]
    python benchmarks/bench_scale.py --genome hg38 --libraries 4 --defaults
    python benchmarks/bench_scale.py --disk-bins 1000000 10000000 30000000 [--write-results]
    python benchmarks/bench_scale.py --model-bins 1000000 10000000 --libraries 4
    python benchmarks/bench_scale.py --disk-bins 10000000 30000000 \
        --model-bins 3000000 10000000 30000000 --libraries 4 --write-results

Both ``--disk-bins`` and ``--model-bins`` extrapolate each step to a human genome at 25 bp
(121 M bins) from their two largest sizes, say how each grows between them (seconds per M
bins, peak RSS) and draw one plot of both (``--plot``, or ``scale_from_disk.png`` with
``--write-results``).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import warnings
from pathlib import Path

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
#: Bins per append of :func:`write_counts_store`.
_APPEND_BINS = 1 << 20


def _chromosome_counts(n: int, n_libraries: int, rng) -> tuple[np.ndarray, dict]:
    """``X`` and the three layers of one simulated chromosome of ``n`` bins (two libraries
    per group): a smooth copy-number background seen by ChIP and control, narrow peaks and
    broad domains shared by each group's replicates, NB noise, a few low-MAPQ pile-ups."""
    n_groups = max(1, n_libraries // 2)
    # Smooth background: a random walk averaged over ~50 bins, exponentiated.
    walk = np.cumsum(rng.normal(0, 0.05, n)).astype(np.float32)
    width = min(501, n)  # "same" mode returns the longer of the two
    walk -= np.convolve(walk, np.ones(width, np.float32) / width, mode="same")
    background = np.exp(np.clip(walk, -1.5, 1.5)).astype(np.float32)
    del walk
    lfe = np.zeros((n, n_groups), np.float32)
    for g in range(n_groups):
        starts = rng.integers(0, max(n - 300, 1), n // 400)
        widths = np.where(rng.random(starts.size) < 0.8, rng.integers(1, 5, starts.size),
                          rng.integers(20, 250, starts.size))  # fmt: skip
        heights = rng.uniform(0.8, 3.0, starts.size).astype(np.float32)
        for s, w, h in zip(starts, widths, heights, strict=True):
            lfe[s : s + w, g] = np.maximum(lfe[s : s + w, g], h)
    artefact = np.zeros(n, bool)
    for s in rng.integers(0, max(n - 5, 1), n // 20000 + 1):
        artefact[s : s + 3] = True
    tech = background * np.where(artefact, 12.0, 1.0).astype(np.float32)
    control = rng.poisson(0.6 * tech).astype(np.float32)
    cmapq = np.where(artefact, 3.0, 40.0).astype(np.float32) * (control > 0)
    X = np.empty((n, n_libraries), np.float32)
    for j in range(n_libraries):
        mean = 0.5 * tech * np.exp(lfe[:, j % n_groups] * (1.0 if j < n_groups else 0.8))
        X[:, j] = rng.negative_binomial(5.0, 5.0 / (5.0 + mean))
    del lfe, tech, background
    mapq = np.where(artefact, np.float32(3.0), np.float32(40.0))[:, None]  # float32 throughout
    layers = {
        "control": np.repeat(control[:, None], n_libraries, 1),
        "mapq": np.where(X > 0, mapq, np.float32(0.0)),
        "control_mapq": np.repeat(cmapq[:, None], n_libraries, 1),
    }
    return X, layers


def _chromosome_rng(seed: int, i: int) -> np.random.Generator:
    """Chromosome ``i``'s generator: each is seeded apart, so one can be drawn alone (the
    first from ``seed`` itself, so a one-chromosome genome is what it always was)."""
    return np.random.default_rng(seed if i == 0 else [seed, i])


def _chromosome_obs(chrom: str, first: int, stop: int, offset: int, categories: list[str]):
    """``obs`` of bins ``[first, stop)`` of a chromosome of 200 bp bins whose first bin is
    genome row ``offset``, named by their genome-wide row."""
    import pandas as pd

    starts = np.arange(first, stop, dtype=np.int64) * BIN
    return pd.DataFrame(
        {"chrom": pd.Categorical(np.full(stop - first, chrom), categories), "start": starts,
         "end": starts + BIN},
        index=pd.RangeIndex(offset + first, offset + stop).astype(str),
    )  # fmt: skip


def _counts_var(depth: np.ndarray, control_depth: float):
    """``var`` of the simulated libraries: groups, read totals."""
    import pandas as pd

    n_libraries = len(depth)
    n_groups = max(1, n_libraries // 2)
    groups = [f"G{j % n_groups}" for j in range(n_libraries)]
    return pd.DataFrame(
        {"group": groups, "depth": depth.astype(float), "control_depth": float(control_depth)},
        index=[f"{g}_R{j // n_groups + 1}" for j, g in enumerate(groups)],
    )


def simulate_counts(chrom_bins: list[int], n_libraries: int, seed: int = 0):
    """AnnData of simulated counts (:func:`_chromosome_counts` per chromosome, each seeded
    apart: :func:`_chromosome_rng`), in the read_bams layout."""
    import pandas as pd
    from anndata import AnnData

    n = int(sum(chrom_bins))
    names = [f"chr{i + 1}" for i in range(len(chrom_bins))]
    X = np.empty((n, n_libraries), np.float32)
    layers = {k: np.empty((n, n_libraries), np.float32) for k in ("control", "mapq",
              "control_mapq")}  # fmt: skip
    obs = []
    offset = 0
    for i, size in enumerate(chrom_bins):
        x, chrom_layers = _chromosome_counts(size, n_libraries, _chromosome_rng(seed, i))
        X[offset : offset + size] = x
        for key, value in chrom_layers.items():
            layers[key][offset : offset + size] = value
        del x, chrom_layers
        obs.append(_chromosome_obs(names[i], 0, size, offset, names))
        offset += size
    var = _counts_var(X.sum(0), layers["control"][:, 0].sum())
    return AnnData(X=X, obs=pd.concat(obs), var=var, layers=layers)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- out of core: BAMs -> zarr store -> aggregated store ------------------------------------

#: Bin size of the out-of-core rows (a human genome at 25 bp is 124 M bins).
DISK_BIN = 25
#: Chromosome length of the simulated genomes (about chr1's).
DISK_CHROM = 250_000_000
#: Bins of a human genome at 25 bp (GRCh38 chr1-22, X), for the extrapolated row.
HUMAN_25 = sum(-(-length // DISK_BIN) for length in HG38)


def disk_bams(n_bins: int, n_libraries: int, reads_per_bin: float) -> Path:
    """Sample sheet of ``n_libraries`` ChIP BAMs and one control, uniform reads (cached)."""
    from bench_binning import WORK
    from chipvi.datasets._bam_writer import BamWriter

    genome = n_bins * DISK_BIN
    sizes = {f"chr{i + 1}": min(DISK_CHROM, genome - i * DISK_CHROM)
             for i in range(-(-genome // DISK_CHROM))}  # fmt: skip
    out = WORK / f"scale_{n_bins}_{n_libraries}_{reads_per_bin}"
    sheet = out / "samplesheet.csv"
    if sheet.exists():
        return sheet
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"chip{j + 1}" for j in range(n_libraries)] + ["input"]
    for name in names:
        import pysam

        path = out / f"{name}.bam"
        with BamWriter(path, sizes, read_length=36) as writer:
            for tid, length in enumerate(sizes.values()):
                n = rng.poisson(reads_per_bin * length / DISK_BIN)
                pos = np.sort(rng.integers(0, length - 36, n))
                flag = np.where(rng.random(n) < 0.5, 16, 0).astype(np.uint16)
                mapq = rng.choice(np.array([0, 10, 60], np.uint8), n, p=[0.05, 0.05, 0.9])
                ids = np.arange(n, dtype=np.int64) + tid * 10**9
                writer.write(tid, pos, flag, mapq, ids, np.ones(length, np.uint8))
        pysam.index(str(path))
    rows = [f"chip{j + 1},chip{j + 1}.bam,input.bam,T,G{j % 2},{j // 2 + 1}"
            for j in range(n_libraries)]  # fmt: skip
    sheet.write_text("sample,bam,control,target,group,replicate\n" + "\n".join(rows) + "\n")
    return sheet


def child(kind: str, *args: str) -> None:
    """One measured step, in its own process; prints a JSON line."""
    import chipvi

    threads = int(args[-1])
    if kind == "bams":
        print(json.dumps({"sheet": str(disk_bams(int(args[0]), int(args[1]), float(args[2])))}))
        return
    if kind == "counts-store":
        n = write_counts_store(int(args[0]), int(args[1]), int(args[2]), args[3])
    elif kind.startswith("fit-"):
        print(json.dumps(fit_child(kind.removeprefix("fit-"), args[0], threads)))
        return
    elif kind == "bin-store":
        chipvi.read_bams(args[0], DISK_BIN, out=args[1], threads=threads, progress=False)
        n = chipvi.io.open_store(args[1]).n_obs
    elif kind == "bin-memory":
        n = chipvi.read_bams(args[0], DISK_BIN, threads=threads, progress=False).n_obs
    elif kind == "aggregate-store":
        chipvi.pp.aggregate_bins(args[0], 200, out=args[1])
        n = chipvi.io.open_store(args[0]).n_obs
    print(json.dumps({"bins": n}))


def write_counts_store(n_bins: int, n_libraries: int, chrom_bins: int, path: str) -> int:
    """Simulated counts written to a store a chromosome at a time (each drawn alone, as
    :func:`simulate_counts` draws it), so memory is set by one chromosome, not the genome."""
    from chipvi.io import store_writer

    sizes = [min(chrom_bins, n_bins - a) for a in range(0, n_bins, chrom_bins)]
    names = [f"chr{i + 1}" for i in range(len(sizes))]
    depth, control_depth, offset = np.zeros(n_libraries), 0.0, 0
    with store_writer(path, overwrite=True) as writer:
        for i, size in enumerate(sizes):
            x, layers = _chromosome_counts(size, n_libraries, _chromosome_rng(0, i))
            # Bins appended at a time: a chromosome's names (Python str) cost more than
            # its counts.
            for a in range(0, size, _APPEND_BINS):
                b = min(a + _APPEND_BINS, size)
                obs = _chromosome_obs(names[i], a, b, offset, names)
                writer.append(obs, x[a:b], {k: v[a:b] for k, v in layers.items()})
            depth += x.sum(0, dtype=np.float64)
            control_depth += float(layers["control"][:, 0].sum(dtype=np.float64))
            offset += size
            del x, layers
        uns = {"chipvi": {"bin_size": BIN, "chrom_sizes": {
            c: b * BIN for c, b in zip(names, sizes, strict=True)}}}  # fmt: skip
        writer.finish(_counts_var(depth, control_depth), uns)
    return n_bins


def fit_child(mode: str, path: str, threads: int) -> dict:
    """Set-up, one training epoch and the posterior of the store at ``path``, read whole
    (``mode="memory"``) or from disk (``"store"``): seconds and peak RSS after each."""
    import scvi
    import torch

    import chipvi
    from chipvi.model import ChIPVI

    torch.set_num_threads(threads)
    chipvi.settings.num_threads = threads
    scvi.settings.seed = 0
    out = {}
    t0 = time.perf_counter()
    store = chipvi.io.open_store(path)
    if mode == "memory":
        data = store.to_memory()
        ChIPVI.setup_anndata(data)
    else:
        data = store
    model = ChIPVI(data)
    out["set-up"] = (time.perf_counter() - t0, _peak_mib())
    t0 = time.perf_counter()
    model.train(max_epochs=1, enable_progress_bar=False, accelerator="cpu")
    out["one training epoch"] = (time.perf_counter() - t0, _peak_mib())
    t0 = time.perf_counter()
    model.add_posterior(data)
    out["add_posterior"] = (time.perf_counter() - t0, _peak_mib())
    out["bins"], out["libraries"] = store.n_obs, store.n_vars
    return out


def model_rows(args) -> tuple[list, str]:
    """Rows (bins, stage, seconds in memory, from disk, bins·libraries, peak RSS in memory,
    from disk); the in-memory columns are None above ``--memory-max`` bins."""
    import shutil

    from bench_binning import WORK, measure

    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for n_bins in args.model_bins:
        path = WORK / "scale_model.zarr"
        cmd = [sys.executable, __file__, "--child", "counts-store", str(n_bins),
               str(args.libraries), str(args.chrom_bins), str(path), "0"]  # fmt: skip
        measure(cmd)
        stages = {}
        for mode in ("memory", "store") if n_bins <= args.memory_max else ("store",):
            cmd = [sys.executable, __file__, "--child", f"fit-{mode}", str(path), str(args.threads)]
            stages[mode] = json.loads(measure(cmd)[2].strip().splitlines()[-1])
            print(mode, stages[mode], file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)
        mem, disk = stages.get("memory"), stages["store"]
        for stage in ("set-up", "one training epoch", "add_posterior"):
            s0, r0 = mem[stage] if mem else (None, None)
            s1, r1 = disk[stage]
            rows.append((disk["bins"], stage, s0, s1, disk["bins"] * disk["libraries"], r0, r1))
    head = (
        f"{args.libraries} libraries, simulated counts, chromosomes of up to {args.chrom_bins:,} "
        f"bins, {args.threads} threads; each mode in its own process (peak RSS so far); in "
        f"memory up to {args.memory_max:,} bins"
    )
    return rows, head


def extrapolate(points: list[tuple[int, float, float]], bins: int) -> tuple[float, float]:
    """``(seconds, peak RSS)`` at ``bins``, linear from the two largest ``(bins, seconds,
    RSS)`` points (a flat memory extrapolates flat)."""
    (b0, s0, m0), (b1, s1, m1) = sorted(points)[-2:]
    return (s1 + (s1 - s0) / (b1 - b0) * (bins - b1), m1 + (m1 - m0) / (b1 - b0) * (bins - b1))


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def model_table(rows: list, libraries: int) -> str:
    """The model rows as markdown, with a human genome at 25 bp (124 M bins, chromosomes of
    at most 10 M) from disk extrapolated from the two largest sizes."""
    lines = [
        "| bins | stage | s in memory | s from disk | disk / memory | bins·libraries/s from disk "
        "| peak RSS in memory (MiB) | peak RSS from disk (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bins, stage, s0, s1, cells, r0, r1 in rows:
        ratio = None if s0 is None else s1 / s0
        lines.append(f"| {bins:,} | {stage} | {_fmt(s0, '.1f')} | {s1:.1f} | {_fmt(ratio, '.2f')} "
                     f"| {cells / s1:,.0f} | {_fmt(r0, ',.0f')} | {r1:,.0f} |")  # fmt: skip
    for stage in dict.fromkeys(r[1] for r in rows):
        points = [(r[0], r[3], r[6]) for r in rows if r[1] == stage]
        if len({p[0] for p in points}) < 2 or max(p[0] for p in points) >= HUMAN_25:
            continue
        secs, rss = extrapolate(points, HUMAN_25)
        lines.append(f"| {HUMAN_25:,} (extrapolated) | {stage} | | {secs:.0f} | | "
                     f"{HUMAN_25 * libraries / secs:,.0f} | | {rss:,.0f} |")  # fmt: skip
    return "\n".join(lines)


def disk_rows(args) -> tuple[list, str]:
    """Rows (size, step, seconds, bins·libraries/s, peak RSS MiB) of the out-of-core path."""
    import shutil

    from bench_binning import WORK, measure

    rows = []
    for n_bins in args.disk_bins:
        # Simulated in a child: a child's peak RSS counts this process's peak from the
        # spawn (Linux keeps the high-water mark across exec), so this driver stays small.
        cmd = [sys.executable, __file__, "--child", "bams", str(n_bins), str(args.libraries),
               str(args.reads_per_bin), "0"]  # fmt: skip
        wall, _, out, _ = measure(cmd)
        sheet = Path(json.loads(out.strip().splitlines()[-1])["sheet"])
        print(f"BAMs for {n_bins:,} bins: {wall:.0f} s", file=sys.stderr)
        store, aggregated = WORK / "scale_bins.zarr", WORK / "scale_bins200.zarr"
        for path in (store, aggregated):
            shutil.rmtree(path, ignore_errors=True)
        steps = [("read_bams(out=store)", "bin-store", sheet, store),
                 ("pp.aggregate_bins(store, 200, out=store)", "aggregate-store", store,
                  aggregated)]  # fmt: skip
        if n_bins <= args.memory_max:
            steps.insert(0, ("read_bams (in memory)", "bin-memory", sheet))
        for name, kind, *paths in steps:
            cmd = [sys.executable, __file__, "--child", kind, *map(str, paths), str(args.threads)]
            wall, rss, out, _ = measure(cmd)
            bins = json.loads(out.strip().splitlines()[-1])["bins"]
            rows.append((bins, name, wall, bins * args.libraries / wall, rss))
            print(rows[-1], file=sys.stderr)
        for path in (store, aggregated):
            shutil.rmtree(path, ignore_errors=True)
    head = (
        f"{args.libraries} ChIP libraries + 1 shared control, uniform reads, "
        f"{args.reads_per_bin} reads per 25 bp bin and library, {args.threads} threads; "
        "each step in its own process (wall time, its own peak RSS)"
    )
    return rows, head


def disk_table(rows: list) -> str:
    """The out-of-core rows as markdown, with a human genome (124 M bins) extrapolated
    linearly in time and memory from the two largest sizes of each step."""
    lines = [
        "| bins (25 bp) | step | seconds | bins·libraries/s | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for bins, name, secs, rate, rss in rows:
        lines.append(f"| {bins:,} | {name} | {secs:.1f} | {rate:,.0f} | {rss:,.0f} |")
    for name in dict.fromkeys(r[1] for r in rows):
        points = [(r[0], r[2], r[4]) for r in rows if r[1] == name]
        if len({p[0] for p in points}) < 2 or max(p[0] for p in points) >= HUMAN_25:
            continue
        secs, rss = extrapolate(points, HUMAN_25)
        lines.append(f"| {HUMAN_25:,} (extrapolated) | {name} | {secs:.0f} | | {rss:,.0f} |")
    return "\n".join(lines)


def scale_plot(series: dict[str, list[tuple[int, float, float]]], path: Path) -> None:
    """Seconds and peak RSS against bins, one line per step (``(bins, seconds, RSS MiB)``
    points), each continued by a dotted line to its extrapolation at a human genome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, points in series.items():
        points = sorted(points)
        bins = [p[0] / 1e6 for p in points]
        for ax, k, scale in ((axes[0], 1, 1.0), (axes[1], 2, 1 / 1024)):
            (line,) = ax.plot(bins, [p[k] * scale for p in points], "o-", label=name)
            if len(points) >= 2 and points[-1][0] < HUMAN_25:
                far = extrapolate(points, HUMAN_25)[k - 1] * scale
                ax.plot([bins[-1], HUMAN_25 / 1e6], [points[-1][k] * scale, far], ":",
                        color=line.get_color())  # fmt: skip
    axes[0].set(xlabel="bins (M)", ylabel="seconds", xscale="log", yscale="log")
    axes[1].set(xlabel="bins (M)", ylabel="peak RSS (GiB)", xscale="log")
    axes[1].axhline(4, color="grey", lw=0.8, ls="--")
    for ax in axes:
        ax.axvline(HUMAN_25 / 1e6, color="grey", lw=0.6, ls=":")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_series(disk: list, model: list) -> dict[str, list[tuple[int, float, float]]]:
    """The plotted lines: each binning step, and the model stages from disk."""
    series: dict[str, list] = {}
    for bins, name, secs, _, rss in disk:
        series.setdefault(name, []).append((bins, secs, rss))
    for bins, stage, _, secs, _, _, rss in model:
        series.setdefault(f"{stage} (model from disk)", []).append((bins, secs, rss))
    return series


def growth(series: dict[str, list[tuple[int, float, float]]]) -> str:
    """How each line grows between its two largest sizes: seconds per million bins (equal
    when time is linear) and peak RSS (equal when memory is flat)."""
    parts = []
    for name, points in series.items():
        if len({p[0] for p in points}) < 2:
            continue
        (b0, s0, m0), (b1, s1, m1) = sorted(points)[-2:]
        parts.append(f"{name}: {s0 / b0 * 1e6:.1f} → {s1 / b1 * 1e6:.1f} s per M bins, peak "
                     f"RSS {m0:,.0f} → {m1:,.0f} MiB")  # fmt: skip
    if not parts:
        return ""
    return ("From the two largest sizes (time linear when the seconds per M bins agree, "
            "memory flat when the peaks do): " + "; ".join(parts) + ".")  # fmt: skip


def main_disk(args) -> int:
    """``--disk-bins`` (binning into a store) and/or ``--model-bins`` (the model from a store):
    tables, extrapolation to a human genome at 25 bp, and the plot of both."""
    disk, model, sections = [], [], {}
    if args.disk_bins:
        disk, head = disk_rows(args)
        sections["Scale from disk (bench_scale.py --disk-bins)"] = (
            head + "\n\n" + disk_table(disk) + "\n\n"
            "Simulated chromosomes are 250 Mb (10 M bins, about GRCh38 chr1 at 25 bp): the "
            "store is written a chromosome (or a few small ones) at a time, so its memory is "
            "set by the largest chromosome and stays flat as the genome grows; the "
            "extrapolated rows are linear in time and memory from the two largest sizes, so "
            "they overstate it."
        )
    if args.model_bins:
        model, head = model_rows(args)
        sections["Scale, model from a store (bench_scale.py --model-bins)"] = (
            head + "\n\n" + model_table(model, args.libraries) + "\n\n"
            "The posterior runs a chain (a chromosome, or the bins between gaps) in pieces of "
            "bounded length with the chain's messages carried across them (exact), so its "
            "peak memory is set by the piece length, not by the chromosome or the genome; the "
            "extrapolated rows (a human genome at 25 bp, 121 M bins) are linear in time and "
            "memory from the two largest sizes."
        )
    series = plot_series(disk, model)
    note = growth(series)
    plot = args.plot
    if plot is None and args.write_results:
        from _record import RESULTS

        plot = RESULTS.parent / "scale_from_disk.png"
    if plot is not None:
        scale_plot(series, Path(plot))
    for name, body in sections.items():
        if note:
            body += "\n\n" + note
        if plot is not None:
            # ../benchmarks/: the same file from here and from docs/comparison.md, which
            # includes the sections.
            body += f"\n\n![seconds and peak RSS against bins](../benchmarks/{Path(plot).name})"
        print(f"## {name}\n\n{body}\n")
        if args.write_results:
            from _record import write_section

            print(f"wrote {write_section(name, body)}")
    return 0


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=3_000_000, help="total 200 bp bins")
    parser.add_argument("--genome", choices=["hg38"], help="chromosome sizes instead of --bins")
    parser.add_argument("--libraries", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--defaults", action="store_true", help="also time model.train()")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument(
        "--disk-bins", type=int, nargs="+", help="out-of-core rows at these numbers of 25 bp bins"
    )
    parser.add_argument("--reads-per-bin", type=float, default=0.2, help="with --disk-bins")
    parser.add_argument(
        "--memory-max", type=int, default=10_000_000,
        help="in-memory binning and model (beside the store) up to these bins",
    )  # fmt: skip
    parser.add_argument(
        "--plot", type=Path, default=None,
        help="write the plot here (default with --write-results: scale_from_disk.png)",
    )  # fmt: skip
    parser.add_argument(
        "--model-bins", type=int, nargs="+", help="model from disk and in memory at these bins"
    )
    parser.add_argument(
        "--chrom-bins", type=int, default=10_000_000, help="bins per chromosome (--model-bins)"
    )
    args = parser.parse_args(argv)
    if args.model_bins or args.disk_bins:
        return main_disk(args)
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
