"""Load: many libraries and a large BAM through the command line, with each process's peak RSS.

Two loads a lab meets that the unit tests do not:

* **100 libraries**: ``chipvi simulate`` writes 25 groups × 4 replicates (each with its
  input) on a 2 × 1 Mb genome; ``chipvi bin`` bins the 100-row sample sheet; a child process
  trains ``ChIPVI`` on the bins (``--epochs``, default 20) and runs ``add_posterior``.
* **A 10 M-read BAM** (``--reads``): ``chipvi bin`` on the simulated ChIP BAM that
  ``bench_binning.py`` builds and caches in ``benchmarks/_work/``.

Every stage runs as its own process, started from this small driver; wall time and peak RSS
come from ``wait4`` (the process's own; Linux counts a child's peak from the fork, so the
driver never loads data itself). Prints one table; ``--write-results`` replaces the "Load" section of RESULTS.md.

Usage::

    PYTHONPATH=src python benchmarks/bench_load.py [--libraries 100] [--reads 10000000]
        [--epochs 20] [--write-results]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _record import markdown, write_section  # noqa: E402
from bench_binning import measure, simulated_bam  # noqa: E402

REPLICATES = 4


def child_train(h5ad: str, epochs: int) -> None:
    """Train on the binned libraries and write the posterior; prints a JSON line."""
    import anndata as ad
    import numpy as np

    import chipvi

    adata = ad.read_h5ad(h5ad)
    chipvi.ChIPVI.setup_anndata(adata)
    model = chipvi.ChIPVI(adata)
    model.train(max_epochs=epochs, enable_progress_bar=False)
    model.add_posterior(adata)
    lfe = adata.layers["chipvi_lfe"]
    print(json.dumps({"bins": adata.n_obs, "libraries": adata.n_vars,
                      "finite": bool(np.isfinite(lfe).all())}))  # fmt: skip


def chipvi_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "chipvi", *args]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--libraries", type=int, default=100, help="multiple of 4 (default 100)")
    ap.add_argument("--reads", type=int, default=10_000_000, help="reads of the large BAM")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of the 100-library fit")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.child[0] == "bam":
            print(simulated_bam(int(args.child[1])))
        else:
            child_train(args.child[0], int(args.child[1]))
        return 0
    if args.libraries % REPLICATES:
        ap.error(f"--libraries must be a multiple of {REPLICATES}")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="chipvi_load_"))
    try:
        sim, h5ad = work / "sim", work / "bins.h5ad"
        groups = args.libraries // REPLICATES
        stages = [
            ("simulate (not timed as chipvi)", chipvi_cli(
                "simulate", str(sim), "-q", "--n-groups", str(groups),
                "--n-replicates", str(REPLICATES), "--seed", "5")),
            (f"chipvi bin, {args.libraries} libraries", chipvi_cli(
                "bin", str(sim / "samplesheet.csv"), "-o", str(h5ad), "-q")),
            (f"train {args.epochs} epochs + add_posterior, {args.libraries} libraries",
             [sys.executable, __file__, "--child", str(h5ad), str(args.epochs)]),
        ]  # fmt: skip
        # Built in a child: a child's peak RSS counts from the fork, so this process stays
        # small for the measurements to be the children's own.
        bam = Path(
            measure([sys.executable, __file__, "--child", "bam", str(args.reads)])[2].split()[-1]
        )
        stages.append(
            (f"chipvi bin, one {args.reads / 1e6:g} M-read BAM", chipvi_cli(
                "bin", _one_row_sheet(bam, work), "-o", str(work / "big.h5ad"), "-q"))
        )  # fmt: skip
        for name, cmd in stages:
            wall, rss, out, cpu = measure(cmd)
            note = out.strip().splitlines()[-1] if out.strip() else ""
            rows.append({"stage": name, "seconds": round(wall, 1), "CPU s": round(cpu, 1),
                         "peak RSS (MiB)": round(rss), "output": note})  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import pandas as pd

    table = markdown(pd.DataFrame(rows), index=False)
    print(table)
    if args.write_results:
        write_section("Load (bench_load.py)", table + "\n")
    return 0


def _one_row_sheet(bam: Path, work: Path) -> str:
    sheet = work / "big.csv"
    sheet.write_text(f"sample,bam,control,target,group,replicate\nbig,{bam},,,g,1\n")
    return str(sheet)


if __name__ == "__main__":
    sys.exit(main())
