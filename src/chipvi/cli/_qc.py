"""``chipvi qc RUN_OR_H5AD``: ChIP quality metrics per library as a table and figures.

Fingerprint metrics (deepTools plotFingerprint / CHANCE), strand cross-correlation NSC/RSC
(ENCODE, from the BAMs), FRiP in given or called regions, and replicate concordance (raw, and
denoised when the run was denoised), all from :mod:`chipvi.tl`, drawn with :mod:`chipvi.pl`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import atomic_dir

#: Per-library columns of qc.tsv, in order (those present).
COLUMNS = (
    "group", "depth", "frip", "nsc", "rsc", "quality_tag", "fragment_length", "auc",
    "elbow_point", "synthetic_js_distance", "js_distance", "pct_genome_enriched",
    "diff_enrichment",
)  # fmt: skip


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "qc",
        help="quality metrics per library: fingerprint, NSC/RSC, FRiP, replicate concordance",
        description=(
            "Quality control of the ChIP libraries in RUN_OR_H5AD (a run directory of "
            "`chipvi train`, an .h5ad from `chipvi bin`, or a .zarr bins store from `chipvi bin "
            "-o`, read a chunk at a time): fingerprint metrics (AUC, elbow, "
            "JS distance to the control, CHANCE), strand cross-correlation NSC/RSC and fragment "
            "length from the BAMs, FRiP in --peaks (or the run's peaks/ from `chipvi call`) and "
            "replicate concordance (raw, and after `chipvi denoise` each library's own-evidence "
            "posterior: its reads alone, so the replicates stay independent). Writes OUT/qc.tsv, "
            "OUT/concordance.tsv and figures; prints the table."
        ),
    )
    p.add_argument("source", type=Path, metavar="RUN_OR_H5AD",
                   help="run directory, .h5ad or .zarr bins store")  # fmt: skip
    p.add_argument(
        "-o", "--out", type=Path, default=None,
        help="output folder (default RUN/qc, or <stem>_qc next to the .h5ad or .zarr)",
    )  # fmt: skip
    p.add_argument(
        "--peaks", type=Path, nargs="+", default=None, metavar="BED",
        help="regions for FRiP (BED/narrowPeak/broadPeak; several files are pooled)",
    )  # fmt: skip
    p.add_argument(
        "--no-strand", action="store_true",
        help="skip strand cross-correlation (it reads the BAMs again)",
    )  # fmt: skip
    p.add_argument(
        "--chroms", default=None,
        help="comma-separated chromosomes for the strand cross-correlation (default all)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no printed table"
    )
    p.set_defaults(func=run)


def _regions(files: list[Path]):
    import pandas as pd

    from ..io import read_regions

    tables = []
    for f in files:
        if not f.is_file():
            raise ChipviInputError(f"--peaks {f}: file does not exist.")
        if f.stat().st_size:
            tables.append(read_regions(f)[["chrom", "start", "end"]])
    return pd.concat(tables, ignore_index=True) if tables else None


def _denoised_layer(adata) -> str | None:
    """The own-evidence posterior mean layer of a denoised AnnData (None before denoising).

    Each library's chain from its own reads only: the library-level layer is the group's
    shared signal times a gain, so replicates would agree by construction.
    """
    from .._posterior import POSTERIOR_KEY, posterior_location

    if POSTERIOR_KEY not in adata.uns:
        return None
    return posterior_location(adata, "log_fold_enrichment", "library_own")[1]


def qc_table(adata, *, regions=None, strand: bool = True, chroms=None):
    """``(per-library table, concordance table or None, notes)`` from the :mod:`chipvi.tl` QC."""
    import pandas as pd

    from .. import tl

    notes = []
    fp = tl.fingerprint(adata)
    parts = [fp]
    if "group" in adata.var:
        parts.insert(0, adata.var[["group"]].astype(str))
    if "depth" in adata.var:
        parts.insert(1, adata.var[["depth"]])
    if regions is not None and len(regions):
        parts.append(tl.frip(adata, regions, key_added=None).to_frame("frip"))
    else:
        notes.append("FRiP: no regions (pass --peaks, or run `chipvi call` first)")
    bams = adata.var["bam"].astype(str) if "bam" in adata.var else None
    if strand and bams is not None and all(bams) and all(Path(b).is_file() for b in bams):
        # indexed or not: strand_cross_correlation reads an unindexed BAM in one pass
        cc = tl.strand_cross_correlation(adata, chroms=chroms, key_added=None)
        parts.append(cc[["nsc", "rsc", "quality_tag", "fragment_length"]])
    elif strand:
        notes.append("NSC/RSC: the BAM files named in var['bam'] are not all readable here")
    table = pd.concat(parts, axis=1)
    table.index.name = "library"
    table = table[[c for c in COLUMNS if c in table.columns]]
    denoised = _denoised_layer(adata)
    try:
        conc = tl.replicate_concordance(adata, denoised=denoised, key_added=None)
    except ChipviInputError as e:  # no group with replicates
        conc = None
        notes.append(f"concordance: {e}")
    return table, conc, notes


def run(args) -> int:
    from .. import pl
    from ._runargs import load_run_or_h5ad

    adata, is_run = load_run_or_h5ad(args.source)
    src = args.source
    out: Path = args.out or (src / "qc" if is_run else src.with_name(f"{src.stem}_qc"))
    peaks_dir = src / "peaks" if is_run and (src / "peaks").is_dir() else None
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    peak_files = args.peaks
    if peak_files is None and peaks_dir is not None:
        peak_files = sorted(p for p in peaks_dir.iterdir() if p.is_file())
    regions = _regions(peak_files) if peak_files else None
    chroms = [c.strip() for c in args.chroms.split(",") if c.strip()] if args.chroms else None
    table, conc, notes = qc_table(adata, regions=regions, strand=not args.no_strand, chroms=chroms)

    out.parent.mkdir(parents=True, exist_ok=True)

    with atomic_dir(out, overwrite=True) as tmp:  # the folder appears whole or not at all
        table.to_csv(tmp / "qc.tsv", sep="\t", float_format="%.4g")
        pl.fingerprint(adata, show=False, save=tmp / "fingerprint.png")
        if conc is not None:
            conc.to_csv(tmp / "concordance.tsv", sep="\t", index=False, float_format="%.4g")
            denoised = _denoised_layer(adata)
            for group in dict.fromkeys(conc["group"]):
                pl.concordance(
                    adata, group=group, denoised=denoised, show=False,
                    save=tmp / f"concordance_{group}.png",
                )  # fmt: skip
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(table.to_string(float_format=lambda v: f"{v:.3g}"))
            if conc is not None:
                print()
                print(conc.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for note in notes:
            print(f"note: {note}")
        print(f"chipvi qc: {out / 'qc.tsv'} and figures in {out}")
    return 0
