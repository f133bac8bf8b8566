"""``chipvi denoise``: trained run → ``.h5ad`` with denoised layers and bigWig tracks."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import atomic_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "denoise",
        help="write denoised signal of a trained run: .h5ad layers and bigWigs",
        description=(
            "Load the trained model of RUN_DIR and write OUT (default RUN_DIR/denoised/): "
            "denoised.h5ad with the model's posterior (layers chipvi_lfe / chipvi_lfe_sd / "
            "chipvi_lfe_lower / chipvi_prob_enriched per library: posterior mean, sd, 5th "
            "percentile of the natural-log fold enrichment and P(enriched); the same per group "
            "in obsm chipvi_group_*; layers chipvi_own_* from each library's own reads only); "
            "plus one bigWig per group of the log fold enrichment under bigwig/."
        ),
    )
    p.add_argument("run_dir", type=Path, help="a run directory made by `chipvi train`")
    p.add_argument(
        "-o", "--out", type=Path, default=None, help="output folder (default RUN_DIR/denoised)"
    )
    p.add_argument("--no-bigwig", action="store_true", help="only the .h5ad")
    p.add_argument("--batch-size", type=int, default=None, help="bins per inference batch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ._outputs import add_denoised, write_group_bigwigs
    from ._runargs import load_trained_run

    out = args.out or (args.run_dir / "denoised")
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    run_dir, cfg, adata, model = load_trained_run(args.run_dir, quiet=args.quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, overwrite=True) as tmp:
        add_denoised(model, adata, batch_size=args.batch_size)
        adata.write_h5ad(tmp / "denoised.h5ad")
        written = {} if args.no_bigwig else write_group_bigwigs(adata, tmp / "bigwig")
    run_dir.event("denoise", out=str(out), bigwigs=sorted(written))
    if not args.quiet:
        print(
            f"chipvi denoise: {out / 'denoised.h5ad'} ({adata.n_obs} bins x {adata.n_vars} libraries)"
        )
        for name in written:
            print(f"  bigWig {out / 'bigwig' / Path(written[name]).name}")
    return 0
