"""``chipvi bin``: sample sheet → read counts per bin (``.h5ad``, or a ``.zarr`` store)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ChipviInputError
from ._schema import add_flags, lazy_flags

#: read_bams arguments that are not flags: the positional sheet; progress follows -q; the
#: store is -o and --overwrite.
READ_BAMS_NOT_FLAGS = {"samplesheet", "progress", "out", "overwrite"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bin",
        help="count reads per genomic bin: sample sheet → .h5ad or .zarr",
        description=(
            "Count ChIP and control reads per bin for every row of a sample sheet "
            "(CSV: sample,bam,control,target,group,replicate) and write the AnnData "
            "(obs = bins, var = ChIP libraries) as .h5ad, or, for genomes too large for "
            "memory (e.g. 25 bp bins), stream it chromosome by chromosome into a .zarr store."
        ),
    )
    p.add_argument(
        "samplesheet",
        type=Path,
        help="sample sheet CSV (relative BAM paths resolve against its folder)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output .h5ad file, or .zarr store (written out of core)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars or summary",
    )
    p.set_defaults(func=run)
    lazy_flags(p, _read_bams_flags)


def _read_bams_flags(p: argparse.ArgumentParser) -> None:
    """One flag per argument of read_bams (its signature and docstring), values checked by it."""
    from ..io import read_bams

    group = p.add_argument_group("counting (the arguments of chipvi.read_bams)")
    add_flags(group, read_bams, skip=READ_BAMS_NOT_FLAGS)
    group.add_argument(
        "--drop-duplicates",
        dest="keep_duplicates",
        action="store_false",
        help="same as --no-keep-duplicates",
    )


def run(args) -> int:
    import chipvi

    from .._utils import atomic_path

    out = args.output
    if out.suffix not in (".h5ad", ".zarr"):
        raise ChipviInputError(f"--output {out} must end in .h5ad or .zarr.")
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    if not args.samplesheet.is_file():
        raise ChipviInputError(f"Sample sheet {args.samplesheet} does not exist.")
    from ._schema import as_flags, parameters

    names = [q.name for q in parameters(chipvi.read_bams, READ_BAMS_NOT_FLAGS)]
    store = out.suffix == ".zarr"
    try:
        adata = chipvi.read_bams(
            args.samplesheet,
            progress=not args.quiet,
            **{name: getattr(args, name) for name in names},
            **({"out": out, "overwrite": args.overwrite} if store else {}),
        )
    except ChipviInputError as e:  # "pass index=True" → "pass --index"
        raise ChipviInputError(as_flags(str(e), names)) from None
    if store:
        opened = chipvi.io.open_store(out)
        n_obs, var = opened.n_obs, opened.var
    else:
        with atomic_path(out, overwrite=args.overwrite) as tmp:
            adata.write_h5ad(tmp)
        n_obs, var = adata.n_obs, adata.var
    if not args.quiet:
        print(f"chipvi bin: {n_obs} bins x {len(var)} libraries -> {out}")
        for name, n in zip(var.index, var["depth"], strict=True):
            print(f"  {name}: {int(n)} reads counted")
    return 0
