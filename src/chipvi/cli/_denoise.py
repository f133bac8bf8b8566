"""``chipvi denoise``: trained run → ``.h5ad`` with denoised layers and bigWig/bedGraph tracks."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import atomic_dir
from ..io import is_store
from ._outputs import TRACK_KINDS, TRACK_SUFFIX

EXAMPLES = """\
examples:
  chipvi denoise RUN                            # h5ad + log2 fold-enrichment bigWig per group
  chipvi denoise RUN --level library --format bedgraph
  chipvi denoise RUN --kind log_fold_enrichment_lower --log-base e
"""


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
        "--kind", choices=TRACK_KINDS, default="log_fold_enrichment",
        help="what the tracks hold: posterior mean log fold enrichment (default), its 5th "
        "percentile (_lower), fold enrichment, sd of the log, or P(enriched)",
    )  # fmt: skip
    p.add_argument(
        "--level", choices=("group", "library", "library_own"), default="group",
        help="tracks per group (replicates as joint evidence; default), per library, or "
        "library_own (each library's own reads)",
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


def run(args) -> int:
    from ._outputs import write_tracks
    from ._runargs import load_trained_run

    out = args.out or (args.run_dir / "denoised")
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    run_dir, cfg, adata, model = load_trained_run(args.run_dir, quiet=args.quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = is_store(adata)
    with atomic_dir(out, overwrite=True) as tmp:
        # The one posterior pass (into a bins store itself: it is never loaded whole).
        model.add_posterior(adata, batch_size=args.batch_size)
        written = {}
        if not args.no_tracks:
            written = write_tracks(
                adata, tmp / "tracks", kind=args.kind, level=args.level, fmt=args.format,
                log_base=args.log_base,
            )  # fmt: skip
        if not store:
            adata.write_h5ad(tmp / "denoised.h5ad")
    run_dir.event("denoise", out=str(out), tracks=sorted(written), track_kind=args.kind,
                  level=args.level, log_base=args.log_base)  # fmt: skip
    if not args.quiet:
        where = adata.path if store else out / "denoised.h5ad"
        print(f"chipvi denoise: {where} ({adata.n_obs} bins x {adata.n_vars} libraries)")
        for path in written.values():
            print(f"  track {out / 'tracks' / Path(path).name}")
    return 0
