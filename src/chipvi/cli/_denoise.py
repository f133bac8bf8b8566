"""``chipvi denoise``: trained run → ``.h5ad`` with denoised layers and bigWig/bedGraph tracks."""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import atomic_dir

EXAMPLES = """\
examples:
  chipvi denoise RUN                            # h5ad + log2 fold-enrichment bigWig per group
  chipvi denoise RUN --level library --format bedgraph
  chipvi denoise RUN --kind log_fold_enrichment_lower --log-base e
"""

#: Track file suffix per --format.
TRACK_SUFFIX = {"bigwig": ".bw", "bedgraph": ".bedGraph"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "denoise",
        help="write denoised signal of a trained run: .h5ad layers and bigWig/bedGraph tracks",
        description=textwrap.fill(
            "Load the trained model of RUN_DIR and write OUT (default RUN_DIR/denoised/): "
            "denoised.h5ad with the model's posterior (layers chipvi_lfe / chipvi_lfe_sd / "
            "chipvi_lfe_lower / chipvi_prob_enriched per library: posterior mean, sd, 5th "
            "percentile of the natural-log fold enrichment and P(enriched); the same per group "
            "in obsm chipvi_group_*; layers chipvi_own_* from each library's own reads only); "
            "plus one track per group (or library) of --kind under tracks/, named "
            "<name>.<kind>.<bw|bedGraph> with the log base in the kind (log2_fold_enrichment: "
            "what deepTools bamCompare writes)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="a run directory made by `chipvi train`")
    p.add_argument(
        "-o", "--out", type=Path, default=None, help="output folder (default RUN_DIR/denoised)"
    )
    p.add_argument(
        "--kind", default="log_fold_enrichment",
        help="what the tracks hold: a kind of model.get_denoised (log_fold_enrichment, "
        "log_fold_enrichment_lower, fold_enrichment, sd, ...; default log_fold_enrichment)",
    )  # fmt: skip
    p.add_argument(
        "--level", default="group",
        help="tracks per group (replicates pooled), library, or library_own (each library's "
        "own reads); a level of model.get_denoised (default group)",
    )  # fmt: skip
    p.add_argument("--format", choices=sorted(TRACK_SUFFIX), default="bigwig", help="track format")
    p.add_argument(
        "--log-base", choices=("2", "e"), default="2",
        help="base of logarithmic kinds in the tracks (default 2, as deepTools; the .h5ad "
        "layers stay natural log)",
    )  # fmt: skip
    p.add_argument("--no-tracks", "--no-bigwig", action="store_true", help="only the .h5ad")
    p.add_argument("--batch-size", type=int, default=None, help="bins per inference batch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary"
    )
    p.set_defaults(func=run)


def track_name(kind: str, log_base: str) -> tuple[str, float]:
    """``(name, divisor)``: the kind named with its log base, and what turns ln into it."""
    divisor = math.log(2.0) if log_base == "2" else 1.0
    base = "log2" if log_base == "2" else "ln"
    if kind.startswith("log_"):
        return f"{base}_{kind[len('log_') :]}", divisor
    if kind == "sd":  # sd of the log fold enrichment
        return f"sd_{base}_fold_enrichment", divisor
    return kind, 1.0


def write_tracks(model, adata, folder: Path, *, kind: str, level: str, fmt: str, log_base: str,
                 batch_size: int | None = None) -> dict[str, Path]:  # fmt: skip
    """One track per group/library of ``model.get_denoised(kind=, level=)``, in ``log_base``."""
    import pandas as pd

    from ..io import write_bedgraph, write_bigwig

    values = model.get_denoised(adata, kind=kind, level=level, batch_size=batch_size)
    name, divisor = track_name(kind, log_base)
    frame = pd.DataFrame(values).astype("float64") / divisor
    frame.index = adata.obs_names
    frame.columns = [f"{c}.{name}" for c in frame.columns]
    key = "_chipvi_tracks"
    adata.obsm[key] = frame
    try:
        writer = write_bigwig if fmt == "bigwig" else write_bedgraph
        written = writer(adata, folder, key=key, overwrite=True)
    finally:
        del adata.obsm[key]
    adata.uns["chipvi_tracks"] = {"kind": kind, "level": level, "log_base": log_base,
                                  "values": name, "format": fmt}  # fmt: skip
    return written


def run(args) -> int:
    from ._outputs import add_denoised
    from ._runargs import load_trained_run

    out = args.out or (args.run_dir / "denoised")
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    run_dir, cfg, adata, model = load_trained_run(args.run_dir, quiet=args.quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, overwrite=True) as tmp:
        add_denoised(model, adata, batch_size=args.batch_size)
        written = {}
        if not args.no_tracks:  # get_denoised checks --kind and --level
            written = write_tracks(
                model, adata, tmp / "tracks", kind=args.kind, level=args.level, fmt=args.format,
                log_base=args.log_base, batch_size=args.batch_size,
            )  # fmt: skip
        adata.write_h5ad(tmp / "denoised.h5ad")
    run_dir.event("denoise", out=str(out), tracks=sorted(written), track_kind=args.kind,
                  level=args.level, log_base=args.log_base)  # fmt: skip
    if not args.quiet:
        print(
            f"chipvi denoise: {out / 'denoised.h5ad'} ({adata.n_obs} bins x {adata.n_vars} libraries)"
        )
        for path in written.values():
            print(f"  track {out / 'tracks' / Path(path).name}")
    return 0
