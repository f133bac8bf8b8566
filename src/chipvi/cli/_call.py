"""``chipvi call``: trained run → enriched regions (BED / narrowPeak / broadPeak)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ChipviInputError

FORMATS = {"narrowPeak": ".narrowPeak", "broadPeak": ".broadPeak", "bed": ".bed"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "call",
        help="call enriched regions of a trained run",
        description=(
            "Call enriched regions from the trained model of RUN_DIR: bins whose "
            "Benjamini-Hochberg q-value under the learned technical null is <= --q, merged, with "
            "a summit bin; one file per group under OUT (default RUN_DIR/peaks/)."
        ),
    )
    p.add_argument("run_dir", type=Path, help="a run directory made by `chipvi train`")
    p.add_argument(
        "-o", "--out", type=Path, default=None, help="output folder (default RUN_DIR/peaks)"
    )
    p.add_argument("--q", type=float, default=0.05, help="q-value threshold (default 0.05)")
    p.add_argument("--format", choices=sorted(FORMATS), default="narrowPeak", help="file format")
    p.add_argument(
        "--level",
        choices=("group", "library"),
        default="group",
        help="regions per group (replicates pooled by the model) or per library",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing peak files")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ._outputs import call_peaks
    from ._runargs import load_trained_run

    if not 0 < args.q <= 1:
        raise ChipviInputError(f"--q must be in (0, 1], got {args.q}.")
    out = args.out or (args.run_dir / "peaks")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace its files.")
    run_dir, cfg, adata, model = load_trained_run(args.run_dir, quiet=args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    regions, written = call_peaks(
        model, adata, out, q=args.q, fmt=args.format, level=args.level, overwrite=args.overwrite
    )
    run_dir.event("call", out=str(out), q=args.q, n_regions=int(len(regions)))
    if not args.quiet:
        print(f"chipvi call: {len(regions)} regions at q <= {args.q}")
        for name, path in dict(written).items():
            print(f"  {name}: {path}")
    return 0
