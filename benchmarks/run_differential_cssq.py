"""Differential enrichment HESC vs HSMM on the bundled H3K4me3 data (chr19:1.23-1.41 Mb).

Trains ChIPVI on the bins of the slice that carries reads, calls enriched regions per group
and differential regions between the groups, writes a bigWig per group, the peaks, an MA plot
and a tracks PNG, and prints a summary.

Usage::

    python benchmarks/run_differential_cssq.py [--out /tmp/cssq_differential]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/cssq_differential")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    import chipvi

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = chipvi.datasets.cssq_chr19()
    keep = (adata.obs["start"] >= 1_230_000) & (adata.obs["end"] <= 1_410_000)
    adata = adata[keep.to_numpy()].copy()
    chipvi.ChIPVI.setup_anndata(adata)
    model = chipvi.ChIPVI(adata)
    t0 = time.perf_counter()
    model.train(enable_progress_bar=False)
    print(
        f"trained on {adata.n_obs} bins x {adata.n_vars} libraries in {time.perf_counter() - t0:.0f} s"
    )
    model.add_posterior(adata)  # the keys tl reads
    regions = chipvi.tl.call_enriched_regions(adata)
    print("enriched regions per group:", regions.groupby("group").size().to_dict())
    table = chipvi.tl.differential_enrichment(adata, "HESC", "HSMM", delta=0.5, fdr=0.05)
    diff = adata.uns["chipvi_differential"]["regions"]
    print(
        f"differential bins: {int((table['direction'] > 0).sum())} higher in HESC, "
        f"{int((table['direction'] < 0).sum())} higher in HSMM; regions: "
        f"{diff['direction'].value_counts().to_dict()}"
    )
    print(diff[["chrom", "start", "end", "n_bins", "signal", "qvalue", "direction"]].to_string())
    chipvi.io.write_bigwig(adata, out / "bigwig", key="chipvi_group_lfe", overwrite=True)
    chipvi.io.write_peaks(adata, out / "peaks", format="narrowPeak", overwrite=True)
    chipvi.io.write_peaks(
        adata, out / "differential.bed", key="chipvi_differential", overwrite=True
    )
    chipvi.pl.differential(adata, save=out / "ma.png")
    chipvi.pl.tracks(
        adata, "chr19:1,230,000-1,410,000", keys={"raw": "X", "lfe": "chipvi_group_lfe"},
        save=out / "tracks.png",
    )  # fmt: skip
    conc = chipvi.tl.replicate_concordance(adata, denoised="chipvi_own_lfe", top_k=50)
    print(conc.round(3).to_string(index=False))
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
