"""Results of a trained model written to files: denoised layers, bigWigs, peaks, track plots.

Shared by ``chipvi denoise``, ``chipvi call`` and ``chipvi demo``. The file writers and the
region caller belong to :mod:`chipvi.io`, :mod:`chipvi.tl` and :mod:`chipvi.pl`; this module
only decides names and folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def add_denoised(model, adata, *, batch_size: int | None = None) -> None:
    """Store the model's posterior in ``adata`` (:meth:`chipvi.ChIPVI.add_posterior`: layers
    per library and own evidence, obsm DataFrames per group)."""
    model.add_posterior(adata, batch_size=batch_size)


def write_group_bigwigs(
    adata, folder: Path, *, key: str = "chipvi_group_lfe"
) -> dict[str, Path]:
    """One bigWig per group of ``adata.obsm[key]``."""
    from .. import io

    return io.write_bigwig(adata, folder, key=key, overwrite=True)


def call_peaks(
    model,
    adata,
    path: Path,
    *,
    q: float = 0.05,
    fmt: str = "narrowPeak",
    level: str = "group",
    overwrite: bool = False,
):
    """Enriched regions from the model's q-values, written as BED/narrowPeak/broadPeak."""
    from .. import io, tl

    # broadPeak files hold domains: link seeds through weaker bins, test each region as a whole.
    broad = tl.BROAD_DOMAINS if fmt == "broadPeak" else {}
    regions = tl.call_enriched_regions(model, adata=adata, q=q, level=level, **broad)
    written = (
        dict(io.write_peaks(regions, path, format=fmt, overwrite=overwrite)) if len(regions) else {}
    )
    # A group without enriched regions still gets its (empty) file, so every group has one.
    names = model.group_names if level == "group" else model.library_names
    suffix = {"narrowPeak": ".narrowPeak", "broadPeak": ".broadPeak", "bed": ".bed"}[fmt]
    for name in names:
        if name not in written:
            empty = Path(path) / f"{name}{suffix}"
            empty.write_text("")
            written[name] = empty
    return regions, written


def plot_tracks(adata, path: Path, region: str | None = None) -> Path:
    """PNG of raw counts and denoised signal over ``region`` (default: the busiest 50 kb)."""
    from .. import pl

    if region is None:
        region = busiest_window(adata)
    keys = ["raw", "chipvi_lfe"]
    pl.tracks(adata, region, keys=keys, show=False, save=path, overwrite=True)
    return path


def busiest_window(adata, width_bp: int = 50_000) -> str:
    """``chrom:start-end`` of the window with the most ChIP reads (for a first look)."""
    obs = adata.obs
    counts = np.asarray(adata.X.sum(1)).ravel()
    chrom = obs["chrom"].astype(str).to_numpy()
    best = (0.0, chrom[0], int(obs["start"].iloc[0]))
    bin_size = int(obs["end"].iloc[0] - obs["start"].iloc[0]) or 1
    n = max(1, width_bp // bin_size)
    for c in dict.fromkeys(chrom):
        idx = np.flatnonzero(chrom == c)
        run = np.convolve(counts[idx], np.ones(min(n, len(idx))), mode="valid")
        i = int(run.argmax())
        if run[i] > best[0]:
            best = (float(run[i]), c, int(obs["start"].iloc[idx[i]]))
    _, c, start = best
    end = min(start + width_bp, int(obs["end"][obs["chrom"].astype(str) == c].max()))
    return f"{c}:{start}-{end}"


def replicate_concordance(adata, *, denoised: str = "chipvi_lfe"):
    """Replicate agreement raw vs denoised (a table), via :func:`chipvi.tl.replicate_concordance`."""
    from .. import tl

    return tl.replicate_concordance(adata, denoised=denoised, key_added=None)
