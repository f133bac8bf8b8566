"""``chipvi simulate``: ChIP/input BAMs with known truth."""

from __future__ import annotations

import argparse
from pathlib import Path


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="write simulated ChIP/input BAMs, a sample sheet and the true enrichment",
        description=(
            "Simulate ChIP-seq with known truth (narrow peaks, broad domains, copy number, "
            "GC bias, low-mappability pile-ups, PCR jackpots, unequal depths) into OUT_DIR: "
            "BAMs, samplesheet.csv and a truth table. Bin it with `chipvi bin`."
        ),
    )
    p.add_argument("out_dir", type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--n-chroms", type=int, default=2, help="chromosomes (default 2)")
    p.add_argument(
        "--chrom-length", type=int, default=1_000_000, help="bp per chromosome (default 1e6)"
    )
    p.add_argument("--n-groups", type=int, default=1, help="biological groups (default 1)")
    p.add_argument("--n-replicates", type=int, default=2, help="replicates per group (default 2)")
    p.add_argument(
        "--depths",
        type=_int_list,
        default=None,
        help="ChIP reads per library, comma-separated (default: the simulator's)",
    )
    p.add_argument(
        "--scenario",
        default="standard",
        help=(
            "which of the model's assumptions to break: standard (default: none), chip_bias, "
            "mapq_partial, offgrid, dispersion, sparse or misspecified (the first four "
            "together); see chipvi.datasets.SimulationSpec"
        ),
    )
    p.add_argument("--paired", action="store_true", help="paired-end reads")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in OUT_DIR")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import datasets

    kwargs = dict(
        seed=args.seed,
        n_chroms=args.n_chroms,
        chrom_length=args.chrom_length,
        n_groups=args.n_groups,
        n_replicates=args.n_replicates,
        scenario=args.scenario,
        paired=args.paired,
        overwrite=args.overwrite,
    )
    if args.depths is not None:
        kwargs["depths"] = args.depths
    sim = datasets.simulate(args.out_dir, **kwargs)
    if not args.quiet:
        print(f"chipvi simulate ({args.scenario}): sample sheet {sim.samplesheet}")
        print(f"  truth table {sim.truth_path} ({len(sim.truth)} bins of 200 bp)")
        print(f"  next: chipvi bin {sim.samplesheet} -o {Path(args.out_dir) / 'bins.h5ad'}")
    return 0
