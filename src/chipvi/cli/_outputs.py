"""A trained model's posterior (the keys of ``model.add_posterior``) written to files: bigWigs,
peaks, track plots.

Shared by ``chipvi denoise``, ``chipvi call`` and ``chipvi demo``. The file writers and the
region caller belong to :mod:`chipvi.io`, :mod:`chipvi.tl` and :mod:`chipvi.pl`; this module
only decides names and folders.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._errors import ChipviInputError
from .._utils import atomic_path

#: What ``chipvi denoise`` / ``chipvi demo`` tracks can hold (kinds of the posterior keys).
TRACK_KINDS = (
    "log_fold_enrichment", "log_fold_enrichment_lower", "fold_enrichment", "sd",
    "probability_enriched",
)  # fmt: skip
#: Track file suffix per format.
TRACK_SUFFIX = {"bigwig": ".bw", "bedgraph": ".bedGraph"}


def track_name(kind: str, log_base: str) -> tuple[str, float]:
    """``(name, divisor)``: the kind named with its log base, and what turns ln into it."""
    divisor = math.log(2.0) if log_base == "2" else 1.0
    base = "log2" if log_base == "2" else "ln"
    if kind.startswith("log_"):
        return f"{base}_{kind[len('log_') :]}", divisor
    if kind == "sd":  # sd of the log fold enrichment
        return f"sd_{base}_fold_enrichment", divisor
    return kind, 1.0


def write_tracks(adata, folder: Path, *, kind: str = "log_fold_enrichment", level: str = "group",
                 fmt: str = "bigwig", log_base: str = "2") -> dict[str, Path]:  # fmt: skip
    """One track per group/library of a posterior key of ``adata``, logs in ``log_base``.

    Files are ``<column>.<kind named with its base>.<bw|bedGraph>`` (e.g.
    ``HESC.log2_fold_enrichment.bw``: what deepTools bamCompare writes).
    """
    from .. import io
    from .._posterior import posterior_frame

    name, divisor = track_name(kind, log_base)
    if io.is_store(adata):
        return _write_store_tracks(adata, folder, kind, level, fmt, name, divisor)
    frame = posterior_frame(adata, kind, level) / divisor
    frame.columns = [f"{c}.{name}" for c in frame.columns]
    key = "_chipvi_tracks"
    adata.obsm[key] = frame
    try:
        writer = io.write_bigwig if fmt == "bigwig" else io.write_bedgraph
        written = writer(adata, folder, key=key, overwrite=True)
    finally:
        del adata.obsm[key]
    adata.uns["chipvi_tracks"] = {"kind": kind, "level": level, "log_base": log_base,
                                  "values": name, "format": fmt}  # fmt: skip
    return written


def _write_store_tracks(store, folder: Path, kind, level, fmt, name, divisor) -> dict[str, Path]:
    """:func:`write_tracks` of a bins store's posterior, read a chunk at a time."""
    import numpy as np

    from .. import io
    from .._posterior import DERIVED, posterior_location

    slot, array = posterior_location(store, DERIVED.get(kind, kind), level)

    def transform(values):
        return (np.exp(values) if kind in DERIVED else values) / divisor

    select = {"layer": array} if slot == "layers" else {"key": array}
    writer = io.write_bigwig if fmt == "bigwig" else io.write_bedgraph
    written = writer(store, folder, transform=transform, overwrite=True, **select)
    named = {}
    for column, path in written.items():
        named[f"{column}.{name}"] = path.rename(path.with_name(f"{column}.{name}{path.suffix}"))
    return named


def check_call_options(fmt: str, broad: bool, broad_cutoff: float | None) -> None:
    """The format never changes the calling method: refuse combinations that would need it to."""
    if fmt == "broadPeak" and not broad:
        raise ChipviInputError(
            "--format broadPeak holds broad domains: add --broad to call them (MACS3 --broad), "
            "or write the narrow regions as --format narrowPeak or bed."
        )
    if broad_cutoff is not None and not broad:
        raise ChipviInputError("--broad-cutoff applies to --broad calls only; add --broad.")


def call_peaks(
    adata,
    path: Path,
    *,
    q: float = 0.05,
    fmt: str = "narrowPeak",
    level: str = "group",
    broad: bool = False,
    broad_cutoff: float | None = None,
    max_gap: int | None = None,
    min_length: int = 0,
    name: str | None = None,
    overwrite: bool = False,
):
    """Enriched regions from the posterior keys of ``adata``, one BED/narrowPeak/broadPeak file
    per group (library).

    ``broad`` calls domains as MACS3 ``--broad`` does: seeds at ``q`` extended through bins at
    ``broad_cutoff`` (default :data:`chipvi.tl.BROAD_DOMAINS`), gaps up to
    ``max_gap`` bp bridged. ``broadPeak`` files hold domains, so they need ``broad``: the format
    never changes the calling method. Files are ``<name>_<group>_peaks<suffix>`` with regions
    ``<name>_<group>_peak_<i>`` (``name`` given, like MACS3 ``-n``), or ``<group><suffix>``.
    """
    from .. import io, tl
    from .._posterior import posterior_location

    check_call_options(fmt, broad, broad_cutoff)
    options: dict = {}
    if broad:
        options = dict(tl.BROAD_DOMAINS)
        if broad_cutoff is not None:
            options["broad_q"] = broad_cutoff
    if max_gap is not None:
        options["merge_gap"] = max_gap
    store = io.is_store(adata)
    if min_length:
        if store:
            bin_size = adata.bin_size
        else:
            bin_size = int(np.median(adata.obs["end"].to_numpy() - adata.obs["start"].to_numpy()))
        options["min_bins"] = max(1, -(-int(min_length) // bin_size))  # ceil: whole bins
    regions = tl.call_enriched_regions(adata, q=q, level=level, **options)
    slot, key = posterior_location(adata, "probability_enriched", level)
    if slot == "obsm":
        names = list((adata.obsm(key, 0, 0) if store else adata.obsm[key]).columns)
    else:
        names = list(adata.var.index)
    suffix = {"narrowPeak": ".narrowPeak", "broadPeak": ".broadPeak", "bed": ".bed"}[fmt]
    written = {}
    for group in names:
        target = Path(path) / (f"{name}_{group}_peaks{suffix}" if name else f"{group}{suffix}")
        own = regions[regions["group"].astype(str) == str(group)] if len(regions) else regions
        if name and len(own):  # MACS3 -n: NAME_peak_1, ... (here per group)
            own = own.assign(name=[f"{name}_{group}_peak_{i + 1}" for i in range(len(own))])
        if len(own):
            io.write_peaks(own, target, format=fmt, overwrite=overwrite)
        else:  # a group without enriched regions still gets its (empty) file
            with atomic_path(target, overwrite=True) as tmp:
                tmp.write_text("")
        written[group] = target
    return regions, written


def plot_tracks(adata, path: Path, region: str | None = None) -> Path:
    """PNG of raw counts and denoised signal over ``region`` (default: the busiest 50 kb)."""
    from .. import pl

    if region is None:
        region = busiest_window(adata)
    keys = {"raw": "X", "denoised": "chipvi_group_lfe"}
    pl.tracks(adata, region, keys=keys, show=False, save=path)
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


def replicate_concordance(adata, *, denoised: str = "chipvi_own_lfe"):
    """Replicate agreement raw vs denoised (a table), via :func:`chipvi.tl.replicate_concordance`.

    Default: each library's own-evidence posterior (its reads alone); the library-level layer
    shares the group's signal, so replicates agree with it by construction.
    """
    from .. import tl

    return tl.replicate_concordance(adata, denoised=denoised, key_added=None)
