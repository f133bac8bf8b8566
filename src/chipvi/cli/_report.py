"""``chipvi report``: one or more runs → a folder of tables and PNGs comparing them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import ChipviInputError
from .._utils import atomic_dir

if TYPE_CHECKING:
    import pandas as pd


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="compare runs: loss curves, final losses, config differences, concordance",
        description=(
            "Summarise one or more runs (run directories or folders of them) into OUT: "
            "runs.csv (status, epochs, final losses, wall time), config_diff.csv (config keys that "
            "differ), scalars.csv (every epoch of every run), losses.png (curves per loss term), "
            "and, for runs with `chipvi denoise` output, concordance.csv/.png (replicate "
            "agreement raw vs each library's own-evidence posterior)."
        ),
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary"
    )
    p.set_defaults(func=run)


def config_differences(runs) -> pd.DataFrame:
    """Config columns whose values differ between runs."""
    cols = [c for c in runs.columns if c.startswith("config.")]
    differ = [c for c in cols if runs[c].astype(str).nunique() > 1]
    return runs[differ].rename(columns=lambda c: c[len("config.") :])


def plot_losses(scalars, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"epoch", "split", "run", "epoch_time_s", "bins_per_s"}
    terms = [c for c in scalars.columns if c not in skip]
    fig, axes = plt.subplots(len(terms), 1, figsize=(7, 2.6 * len(terms)), squeeze=False)
    for ax, term in zip(axes[:, 0], terms, strict=True):
        for (run, split), df in scalars.groupby(["run", "split"], sort=False):
            values = df[["epoch", term]].dropna()
            if len(values):
                ax.plot(values["epoch"], values[term], label=f"{run} ({split})")
        ax.set_ylabel(term)
        ax.set_xlabel("epoch")
        if term.startswith("elbo") and (scalars[term].dropna() > 0).all():
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def concordance_table(runs) -> pd.DataFrame | None:
    """Replicate concordance of every run that `chipvi denoise` finished: its
    ``denoised/denoised.h5ad``, or for a run on a bins store the posterior in the store (read a
    chunk at a time)."""
    import pandas as pd

    from ._outputs import replicate_concordance
    from ._runargs import load_run_or_h5ad

    frames = []
    for name, row in runs.iterrows():
        path = Path(row["path"])
        if not (path / "denoised").is_dir():
            continue
        try:
            data, _ = load_run_or_h5ad(path, need_denoised=True)
        except ChipviInputError:  # denoised folder without a posterior (stopped, or moved)
            continue
        frames.append(replicate_concordance(data).assign(run=name))
    return pd.concat(frames, ignore_index=True) if frames else None


def plot_concordance(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    value_cols = [c for c in table.columns if c.startswith(("pearson", "spearman"))]
    summary = table.groupby("run")[value_cols].mean()
    ax = summary.plot.bar(figsize=(max(5, 1.5 * len(summary)), 3.5))
    ax.set_ylabel("mean over replicate pairs")
    # legend beside the bars (not over them); run names slanted so long ones are not cut
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(ax.figure)


def run(args) -> int:
    from ..io import load_runs

    out: Path = args.out
    if out.exists() and not args.overwrite:
        raise ChipviInputError(f"{out} already exists; pass --overwrite to replace it.")
    facts = load_runs(args.runs)
    runs, scalars = facts["runs"], facts["scalars"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, overwrite=True) as tmp:
        summary_cols = [c for c in runs.columns if not c.startswith("config.")]
        runs[summary_cols].to_csv(tmp / "runs.csv")
        config_differences(runs).to_csv(tmp / "config_diff.csv")
        scalars.to_csv(tmp / "scalars.csv", index=False)
        if len(scalars):
            plot_losses(scalars, tmp / "losses.png")
        conc = concordance_table(runs)
        if conc is not None:
            conc.to_csv(tmp / "concordance.csv", index=False)
            plot_concordance(conc, tmp / "concordance.png")
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.width", 120, "display.max_columns", 12):
            print(runs[summary_cols].drop(columns=["path"]).to_string())
        print(f"chipvi report: {len(runs)} runs -> {out}")
    return 0
