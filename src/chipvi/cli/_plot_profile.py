"""``chipvi plot-profile``: signal around regions or TSSs as a heatmap and a mean profile
(deepTools ``computeMatrix reference-point`` + ``plotHeatmap`` + ``plotProfile``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ChipviInputError
from .._posterior import POSTERIOR_KEY, posterior_location
from .._utils import atomic_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot-profile",
        help="heatmap and mean profile of signal around regions or TSSs",
        description=(
            "Signal in the bins around a reference point of each region (its centre, TSS or "
            "TES, read along its strand) of SOURCE: a run directory after `chipvi denoise` "
            "(default: the denoised log fold enrichment per group), an .h5ad or a .zarr bins "
            "store (default: counts per million per library; a store is read only where the "
            "regions are). Writes OUT/heatmap.png, OUT/profile.png and "
            "OUT/profile.tsv (mean per position)."
        ),
    )
    p.add_argument("source", type=Path, metavar="RUN_OR_H5AD",
                   help="run directory, .h5ad or .zarr bins store")  # fmt: skip
    p.add_argument(
        "-r", "--regions", type=Path, required=True,
        help="regions: BED / narrowPeak / broadPeak, or a GTF (one region per gene)",
    )  # fmt: skip
    p.add_argument(
        "--reference", choices=("center", "tss", "tes"), default="center",
        help="reference point of each region (default center; tss/tes follow the strand)",
    )  # fmt: skip
    p.add_argument("-b", "--upstream", type=int, default=2000, help="bp before (default 2000)")
    p.add_argument("-a", "--downstream", type=int, default=2000, help="bp after (default 2000)")
    signal = p.add_mutually_exclusive_group()
    signal.add_argument("--layer", default=None, help="library-level layer of the bins")
    signal.add_argument(
        "--key",
        default=None,
        help="group-level obsm key (default on a denoised run: chipvi_group_lfe)",
    )
    p.add_argument(
        "-o", "--out", type=Path, default=None,
        help="output folder (default RUN/profile or <stem>_profile next to the .h5ad/.zarr)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import pandas as pd

    from .. import pl, tl

    if not args.regions.is_file():
        raise ChipviInputError(f"--regions {args.regions}: file does not exist.")
    from ._runargs import load_run_or_h5ad

    adata, denoised = load_run_or_h5ad(args.source, need_denoised=True)
    src = args.source
    out: Path = args.out or (src / "profile" if denoised else src.with_name(f"{src.stem}_profile"))
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    key = args.key
    if key is None and args.layer is None and POSTERIOR_KEY in adata.uns:
        _, key = posterior_location(adata, "log_fold_enrichment", "group")
    result = tl.profile(
        adata, args.regions, reference=args.reference, upstream=args.upstream,
        downstream=args.downstream, layer=args.layer, key=key,
    )  # fmt: skip
    import numpy as np

    with np.errstate(invalid="ignore"):
        mean = np.nanmean(result["matrix"], axis=0).T  # positions × columns
    table = pd.DataFrame(mean, index=result["positions"], columns=result["columns"])
    table.index.name = "position_bp"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, overwrite=True) as tmp:  # the folder appears whole or not at all
        table.to_csv(tmp / "profile.tsv", sep="\t", float_format="%.6g")
        pl.heatmap(adata, show=False, save=tmp / "heatmap.png")
        pl.profile(adata, show=False, save=tmp / "profile.png")
    if not args.quiet:
        n = result["matrix"].shape[0]
        print(f"chipvi plot-profile: {n} regions, {result['signal']} -> {out}")
    return 0
