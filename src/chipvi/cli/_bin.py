"""``chipvi bin``: sample sheet → ``.h5ad`` of read counts per bin."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ChipviInputError
from ._schema import add_flags, lazy_flags

#: read_bams arguments that are not flags: the positional sheet; progress follows -q.
READ_BAMS_NOT_FLAGS = {"samplesheet", "progress"}


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
    if out.suffix != ".h5ad":
        raise ChipviInputError(f"--output {out} must end in .h5ad.")
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    if not args.samplesheet.is_file():
        raise ChipviInputError(f"Sample sheet {args.samplesheet} does not exist.")
    from ._schema import as_flags, parameters

    names = [q.name for q in parameters(chipvi.read_bams, READ_BAMS_NOT_FLAGS)]
    try:
        adata = chipvi.read_bams(
            args.samplesheet,
            progress=not args.quiet,
            **{name: getattr(args, name) for name in names},
        )
    except ChipviInputError as e:  # "pass index=True" → "pass --index"
        raise ChipviInputError(as_flags(str(e), names)) from None
    with atomic_path(out, overwrite=args.overwrite) as tmp:
        adata.write_h5ad(tmp)
    if not args.quiet:
        counts = adata.X.sum(0)
        print(f"chipvi bin: {adata.n_obs} bins x {adata.n_vars} libraries -> {out}")
        for name, n in zip(adata.var_names, counts, strict=True):
            print(f"  {name}: {int(n)} reads counted")
    return 0
