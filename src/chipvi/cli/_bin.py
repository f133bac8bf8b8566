"""``chipvi bin``: sample sheet → ``.h5ad`` of read counts per bin."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import parse_max_per_position


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bin",
        help="count reads per genomic bin: sample sheet → .h5ad",
        description=(
            "Count ChIP and control reads per bin for every row of a sample sheet "
            "(CSV: sample,bam,control,target,group,replicate) and write the AnnData "
            "(obs = bins, var = ChIP libraries) as .h5ad."
        ),
    )
    p.add_argument(
        "samplesheet",
        type=Path,
        help="sample sheet CSV (relative BAM paths resolve against its folder)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output .h5ad file")
    p.add_argument("--bin-size", type=int, default=200, help="bin width in bp (default 200)")
    p.add_argument(
        "--fragment-length",
        type=int,
        default=200,
        help="single-end reads count at 5' end + fragment_length/2 (default 200)",
    )
    p.add_argument(
        "--min-mapq",
        type=int,
        default=0,
        help="drop reads below this MAPQ (default 0: MAPQ is a model covariate)",
    )
    p.add_argument(
        "--drop-duplicates", action="store_true", help="drop reads flagged as duplicates"
    )
    p.add_argument(
        "--max-per-position",
        type=_max_per_position,
        default=None,
        metavar="N|auto",
        help="count at most N reads per position, strand and TLEN (MACS3 --keep-dup N); "
        "auto: N from each BAM's read density",
    )
    p.add_argument(
        "--blacklist", type=Path, default=None, help="BED of regions whose bins are removed"
    )
    p.add_argument(
        "--chroms", default=None, help="comma-separated chromosomes to keep (default all)"
    )
    p.add_argument(
        "--region",
        default=None,
        metavar="CHROM:START-END",
        help="keep the bins of one region, e.g. chr19:1,000,000-2,000,000 (0-based half-open; "
        "bins stay on the genome-wide grid)",
    )
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars or summary",
    )
    p.set_defaults(func=run)


def _max_per_position(text: str):
    try:
        return parse_max_per_position(text)
    except ChipviInputError as err:  # argparse shows this message, not a generic one
        raise argparse.ArgumentTypeError(str(err)) from None


def run(args) -> int:
    import chipvi

    from .._utils import atomic_path

    out = args.output
    if out.suffix != ".h5ad":
        raise ChipviInputError(f"--output {out} must end in .h5ad.")
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    if not args.samplesheet.is_file():
        raise ChipviInputError(f"Sample sheet {args.samplesheet} does not exist.")
    chroms = [c.strip() for c in args.chroms.split(",") if c.strip()] if args.chroms else None
    adata = chipvi.read_bams(
        args.samplesheet,
        bin_size=args.bin_size,
        fragment_length=args.fragment_length,
        min_mapq=args.min_mapq,
        keep_duplicates=not args.drop_duplicates,
        max_per_position=args.max_per_position,
        blacklist=args.blacklist,
        chroms=chroms,
        region=args.region,
        threads=args.threads,
        progress=not args.quiet,
    )
    with atomic_path(out, overwrite=args.overwrite) as tmp:
        adata.write_h5ad(tmp)
    if not args.quiet:
        counts = adata.X.sum(0)
        print(f"chipvi bin: {adata.n_obs} bins x {adata.n_vars} libraries -> {out}")
        for name, n in zip(adata.var_names, counts, strict=True):
            print(f"  {name}: {int(n)} reads counted")
    return 0
