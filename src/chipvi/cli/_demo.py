"""``chipvi demo``: the whole pipeline on the bundled real data, in about a minute.

Bins the bundled ENCODE H3K4me3 slice (hg19 chr19, HESC and HSMM, two replicates each),
trains ChIPVI briefly through the same run-directory machinery as ``chipvi train``, writes the
denoised signal and prints a summary. Everything lands in one folder (default ``./chipvi_demo``):

    bins.h5ad                counts per 200 bp bin (the sequenced slice of chr19)
    run/                     a ``chipvi train`` run directory (config, facts, model)
    denoised.h5ad            bins.h5ad + the model's posterior (ChIPVI.add_posterior: layers
                             chipvi_lfe, chipvi_lfe_sd, chipvi_lfe_lower, chipvi_prob_enriched,
                             chipvi_own_* (each library's own reads); obsm chipvi_group_*)
    bigwig/<group>.log2_fold_enrichment.bw
                             posterior mean log2 fold enrichment per group (as `chipvi
                             denoise` names its tracks)
    peaks/<group>.narrowPeak enriched regions per group
    tracks.png               raw counts and denoised signal over the busiest 50 kb
    summary.txt              what the command printed

Overwriting: the demo replaces a folder that an earlier ``chipvi demo`` made (it carries a
``.chipvi_demo`` marker), so the README command can be run again; any other existing path is
refused unless ``--overwrite``. The folder is assembled next to its destination and renamed
at the end, so a failed or interrupted demo leaves no half-written folder.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from .._errors import ChipviInputError

MARKER = ".chipvi_demo"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="bin, train and denoise the bundled real data (about a minute)",
        description=(
            "Run the whole pipeline on the bundled ENCODE H3K4me3 data (hg19 chr19:1.23-1.41 Mb; "
            "HESC and HSMM, two replicates each, with inputs): bin, train ChIPVI, write denoised "
            "tracks, peaks and a plot, and print a summary with replicate concordance raw vs "
            "denoised. An earlier demo folder is replaced; any other existing folder needs "
            "--overwrite."
        ),
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("chipvi_demo"),
        help="output folder (default ./chipvi_demo)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: the demo's short schedule)",
    )
    p.add_argument("--bin-size", type=int, default=200, help="bin width in bp (default 200)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT even if a demo did not make it"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress or summary",
    )
    p.set_defaults(func=run)


DEMO_EPOCHS = 300


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if overwrite or (out / MARKER).is_file():
        return
    raise ChipviInputError(
        f"{out} already exists and was not made by `chipvi demo`; pass --overwrite to replace it "
        "or --out to choose another folder."
    )


def run(args) -> int:
    from omegaconf import OmegaConf

    import chipvi

    from .._utils import atomic_dir, atomic_path
    from ..io import RunDir
    from ._config import ExperimentConfig, to_yaml, validate
    from ._outputs import (
        busiest_window,
        call_peaks,
        plot_tracks,
        replicate_concordance,
        write_tracks,
    )
    from ._train import train_run

    quiet = args.quiet
    out: Path = args.out
    if args.epochs is not None and args.epochs <= 0:
        raise ChipviInputError(f"--epochs must be a positive integer, got {args.epochs}.")
    if args.bin_size <= 0:
        raise ChipviInputError(f"--bin-size must be a positive integer, got {args.bin_size}.")
    _check_out(out, args.overwrite)
    if not out.parent.exists():
        raise ChipviInputError(f"Folder {out.parent} does not exist; create it first.")
    t0 = time.perf_counter()
    say = (lambda *a: None) if quiet else print
    lines: list[str] = []

    def report(line: str = "") -> None:
        lines.append(line)
        say(line)

    with atomic_dir(out, overwrite=True) as tmp:
        sheet = chipvi.datasets.cssq_chr19_samplesheet()
        say(f"chipvi demo: binning the bundled data ({sheet}) at {args.bin_size} bp")
        # read_bams on the bundled sheet, keeping the sequenced slice of chr19
        adata = chipvi.datasets.cssq_chr19(args.bin_size, progress=not quiet)
        with atomic_path(tmp / "bins.h5ad") as p:
            adata.write_h5ad(p)

        cfg = OmegaConf.structured(ExperimentConfig)
        cfg.name = "demo"
        cfg.output_dir = str(out)
        cfg.data.h5ad = str((out / "bins.h5ad").resolve())  # where it will live after the rename
        cfg.data.bin_size = args.bin_size
        cfg.train.max_epochs = args.epochs or DEMO_EPOCHS
        # ~900 bins x 4 libraries: minibatches too small for intra-op threads to pay off, and
        # extra threads only contend with each other on small shared machines.
        cfg.train.threads = 1
        validate(cfg)
        say(
            f"chipvi demo: training ChIPVI on {adata.n_obs} bins x {adata.n_vars} libraries "
            f"for {cfg.train.max_epochs} epochs"
        )
        run_dir = RunDir.create(tmp / "run", to_yaml(cfg))
        # The run's data cache is the same AnnData; train_run reads run/data.h5ad if present.
        shutil.copyfile(tmp / "bins.h5ad", run_dir.data_path)
        model = train_run(cfg, run_dir, quiet=quiet, resume=False, announce=False)

        model.add_posterior(adata)  # the one posterior pass; the rest reads its keys
        write_tracks(adata, tmp / "bigwig")
        (tmp / "peaks").mkdir()
        regions, _ = call_peaks(adata, tmp / "peaks")
        region = busiest_window(adata)
        plot_tracks(adata, tmp / "tracks.png", region)
        with atomic_path(tmp / "denoised.h5ad") as p:
            adata.write_h5ad(p)

        # ---- summary ----------------------------------------------------------------------
        chrom = adata.obs["chrom"].astype(str)
        report("")
        report("chipvi demo summary")
        report(
            f"  data      bundled ENCODE H3K4me3, {chrom.iloc[0]}:{int(adata.obs['start'].min()):,}-"
            f"{int(adata.obs['end'].max()):,} ({adata.n_obs} bins of {args.bin_size} bp)"
        )
        report(
            f"  libraries {adata.n_vars} in groups {', '.join(dict.fromkeys(adata.var['group'].astype(str)))}"
        )
        counts = np.asarray(adata.X.sum(0)).ravel()
        ctrl = np.asarray(adata.layers["control"].sum(0)).ravel()
        for name, n, c in zip(adata.var_names, counts, ctrl, strict=True):
            report(f"    {name:<10} ChIP reads {int(n):>7,}   control reads {int(c):>7,}")
        table = replicate_concordance(adata, denoised="chipvi_lfe")
        own = replicate_concordance(adata, denoised="chipvi_own_lfe")
        report(
            "  replicate concordance (Pearson between replicates: raw log1p CPM, denoised, "
            "each library's own evidence)"
        )
        raw_col = next(c for c in table.columns if c.startswith("pearson") and "raw" in c)
        den_col = next(c for c in table.columns if c.startswith("pearson") and "denoised" in c)
        for (_, r), (_, o) in zip(table.iterrows(), own.iterrows(), strict=True):
            report(
                f"    {r['group']:<6} raw {r[raw_col]:.3f}   denoised {r[den_col]:.3f}   "
                f"own evidence {o[den_col]:.3f}"
            )
        # Denoised libraries share the group's signal,
        # so their concordance is ~1 by construction; the own-evidence outputs
        # (level="library_own") use each library's reads only and are the comparable figure.
        report(
            "    (denoised libraries of a group share its signal, so ~1.0 is expected, not a "
            "score; own evidence uses each library's reads only: compare that one with raw)"
        )
        report(f"  enriched regions (q <= 0.05): {len(regions)}")
        (tmp / "summary.txt").write_text("\n".join(lines) + "\n")
        (tmp / MARKER).write_text(
            "made by `chipvi demo`; a later `chipvi demo` may replace this folder\n"
        )
    say(
        f"  outputs   {out}/ (denoised.h5ad, run/, "
        + ", ".join(
            k for k in ("bigwig/", "peaks/", "tracks.png") if (out / k.rstrip("/")).exists()
        )
        + f"); tracks region {region}"
    )
    say(f"  time      {time.perf_counter() - t0:.0f} s")
    return 0
