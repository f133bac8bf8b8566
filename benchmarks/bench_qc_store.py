"""Peak memory of QC on a bins store: ``chipvi qc`` and the concordance of a continuous layer.

Writes a 25 bp store of N bins (simulated counts of :func:`bench_scale.simulate_counts`, a
chromosome of 2 M bins at a time, so the genome is never in memory here either) with a
continuous layer ``den`` (log1p counts plus noise: every value distinct, like a posterior
mean), then measures, each in a fresh process, the peak RSS of

- ``chipvi qc STORE --no-strand`` (fingerprint, replicate concordance, figures), and
- ``chipvi.tl.replicate_concordance(store, denoised="den")`` (Spearman past the distinct-value
  cap: ranked in buckets),

against the store's size on disk and the size of its arrays in memory.

    python benchmarks/bench_qc_store.py --bins 3000000 10000000 --work /tmp/qcbench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

CHROM_BINS = 2_000_000
BIN = 25


def write_store(n_bins: int, path: Path, libraries: int = 4) -> None:
    import pandas as pd

    from bench_scale import simulate_counts
    from chipvi.io import store_writer

    sizes = [min(CHROM_BINS, n_bins - a) for a in range(0, n_bins, CHROM_BINS)]
    chroms = [f"chr{i + 1}" for i in range(len(sizes))]
    depth = np.zeros(libraries)
    with store_writer(path, overwrite=True) as writer:
        for i, size in enumerate(sizes):
            block = simulate_counts([size], libraries, seed=i)
            starts = np.arange(size, dtype=np.int64) * BIN
            obs = pd.DataFrame(
                {"chrom": pd.Categorical([chroms[i]] * size, categories=chroms),
                 "start": starts, "end": starts + BIN},
                index=pd.Index([f"{chroms[i]}:{s}-{s + BIN}" for s in starts], dtype=object),
            )  # fmt: skip
            rng = np.random.default_rng(100 + i)
            x = np.asarray(block.X)
            den = (np.log1p(x) + rng.normal(0, 0.2, x.shape)).astype(np.float32)
            layers = {k: block.layers[k] for k in ("control", "mapq", "control_mapq")}
            writer.append(obs, x, {**layers, "den": den})
            depth += x.sum(0)
            var = block.var
        var = var.assign(depth=depth)
        uns = {"chipvi": {"bin_size": BIN, "chrom_sizes": {
            c: s * BIN for c, s in zip(chroms, sizes, strict=True)}}}  # fmt: skip
        writer.finish(var, uns)


def measure(code: str) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ``python -c code`` in a fresh process."""
    t0 = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", code],
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return time.perf_counter() - t0, int(out.stderr.strip().splitlines()[-1]) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, nargs="+", default=[3_000_000, 10_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/qc_store_bench"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.bins:
        path = args.work / f"bins{n // 1_000_000}M.zarr"
        if not path.exists():
            write_store(n, path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
        arrays = n * 4 * 5 * 4 / 2**20  # X, 3 layers and den, 4 libraries, 4 bytes
        qc = measure(
            "from chipvi.cli import main; import sys; sys.exit(main(['qc', "
            f"'{path}', '--no-strand', '-q', '--overwrite', '-o', '{args.work}/qc{n}']))"
        )
        conc = measure(
            "import chipvi; chipvi.tl.replicate_concordance("
            f"'{path}', denoised='den', key_added=None)"
        )
        # What the commands import before they read a bin (numpy, pandas, anndata, zarr, scipy,
        # matplotlib): the floor under both.
        baseline = measure(
            "import chipvi.tl._qc, chipvi.pl._plots, chipvi.cli._qc, zarr, matplotlib.pyplot"
        )
        row = {"bins": n, "store_mib": round(size), "arrays_mib": round(arrays),
               "import_mib": round(baseline[1]),
               "qc_s": round(qc[0], 1), "qc_mib": round(qc[1]),
               "concordance_s": round(conc[0], 1), "concordance_mib": round(conc[1])}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
