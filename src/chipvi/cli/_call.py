"""``chipvi call``: trained run → enriched regions (BED / narrowPeak / broadPeak), MACS3-style."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from .._errors import ChipviInputError

FORMATS = {"narrowPeak": ".narrowPeak", "broadPeak": ".broadPeak", "bed": ".bed"}

EXAMPLES = """\
examples:
  chipvi call RUN                               # narrow regions at q <= 0.05, per group
  chipvi call RUN -q 0.01 -n H3K4me3            # H3K4me3_<group>_peaks.narrowPeak
  chipvi call RUN --broad                       # domains (MACS3 --broad) as broadPeak
  chipvi call RUN --broad --broad-cutoff 0.1 --max-gap 2000 --min-length 1000
  chipvi call RUN --level library --format bed  # one file per library
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "call",
        help="call enriched regions of a trained run",
        description=textwrap.fill(
            "Call enriched regions from the posterior of RUN_DIR (its denoised/denoised.h5ad "
            "after `chipvi denoise`, else one posterior pass of its model; for a run on a bins "
            "store, the store's posterior, read a chromosome at a time): bins whose q-value "
            "(Bayesian FDR of the posterior enrichment) is <= -q, merged, with a summit bin; "
            "with --broad, domains: those bins extended through bins at --broad-cutoff (MACS3 "
            "--broad). One file per group (or library) under OUT (default RUN_DIR/peaks/)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="a run directory made by `chipvi train`")
    p.add_argument(
        "-o", "--out", type=Path, default=None, help="output folder (default RUN_DIR/peaks)"
    )
    p.add_argument(
        "-q", "--qvalue", "--q", dest="q", type=float, default=0.05,
        help="q-value cutoff per bin (MACS3 -q; default 0.05)",
    )  # fmt: skip
    p.add_argument(
        "--broad", action="store_true",
        help="call broad domains (MACS3 --broad); the default format becomes broadPeak",
    )  # fmt: skip
    p.add_argument(
        "--broad-cutoff", type=float, default=None,
        help="weaker q-value through which --broad extends the regions (default 0.2)",
    )  # fmt: skip
    p.add_argument(
        "--max-gap", type=int, default=None, metavar="BP",
        help="merge regions closer than this (default: adjacent bins only; 1000 with --broad)",
    )  # fmt: skip
    p.add_argument(
        "--min-length", type=int, default=0, metavar="BP",
        help="drop regions shorter than this (rounded up to whole bins; default 0)",
    )  # fmt: skip
    p.add_argument(
        "--format", choices=sorted(FORMATS), default=None,
        help="file format (default narrowPeak, broadPeak with --broad); broadPeak needs --broad",
    )  # fmt: skip
    p.add_argument(
        "--level",
        choices=("group", "library"),
        default="group",
        help="regions per group (replicates pooled by the model) or per library",
    )
    p.add_argument(
        "-n", "--name", default=None,
        help="name prefix (MACS3 -n): files NAME_<group>_peaks.<format>, regions "
        "NAME_<group>_peak_<i>; default <group>.<format>, regions <group>_region_<i>",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing peak files")
    p.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS,
        help="no summary (-q is the q-value here, as in MACS3; `chipvi -q call` is quiet too)",
    )  # fmt: skip
    p.set_defaults(func=run)


def _check(args) -> None:
    if not 0 < args.q <= 1:
        raise ChipviInputError(f"-q/--qvalue must be in (0, 1], got {args.q}.")
    if args.broad_cutoff is not None and not args.q <= args.broad_cutoff <= 1:
        raise ChipviInputError(
            f"--broad-cutoff must lie between -q ({args.q}) and 1, got {args.broad_cutoff}."
        )
    if args.max_gap is not None and args.max_gap < 0:
        raise ChipviInputError(f"--max-gap must be >= 0 bp, got {args.max_gap}.")
    if args.min_length < 0:
        raise ChipviInputError(f"--min-length must be >= 0 bp, got {args.min_length}.")
    if args.name is not None and (not args.name or "/" in args.name):
        raise ChipviInputError(f"-n/--name must be a file name prefix, got {args.name!r}.")


def run(args) -> int:
    from ._outputs import call_peaks, check_call_options
    from ._runargs import load_posterior

    _check(args)
    fmt = args.format or ("broadPeak" if args.broad else "narrowPeak")
    check_call_options(fmt, args.broad, args.broad_cutoff)  # before loading the model
    out = args.out or (args.run_dir / "peaks")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace its files.")
    run_dir, adata = load_posterior(args.run_dir, quiet=args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    regions, written = call_peaks(
        adata, out, q=args.q, fmt=fmt, level=args.level, broad=args.broad,
        broad_cutoff=args.broad_cutoff, max_gap=args.max_gap, min_length=args.min_length,
        name=args.name, overwrite=args.overwrite,
    )  # fmt: skip
    run_dir.event(
        "call", out=str(out), q=args.q, broad=args.broad, format=fmt, level=args.level,
        n_regions=int(len(regions)),
    )  # fmt: skip
    if not args.quiet:
        mode = "broad domains" if args.broad else "regions"
        print(f"chipvi call: {len(regions)} {mode} at q <= {args.q}")
        for name, path in dict(written).items():
            print(f"  {name}: {path}")
    return 0
