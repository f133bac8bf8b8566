"""bigWig and bedGraph signal tracks: write bins out per library or group, read tracks back in.

Tracks are written from the same per-bin values that live in the AnnData (``X``, a layer, or a
group-level ``obsm`` table), one file per library or group, with chromosome sizes from
``uns['chipvi']['chrom_sizes']`` so they open in IGV and the UCSC browser.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._bins import bin_coordinates, chrom_sizes, genomic_order, select_columns, signal_frame
from .._errors import ChipviInputError
from .._utils import atomic_path
from ._store import BinStore, is_store, open_store

NanPolicy = Literal["skip", "zero", "error"]
_BIGWIG_SUFFIXES = (".bw", ".bigwig")
_BEDGRAPH_SUFFIXES = (".bedgraph", ".bg", ".bdg")


def _track_targets(
    names: Sequence[str], path: str | os.PathLike, suffixes: tuple[str, ...], default_suffix: str
) -> dict[str, Path]:
    """Map each column to its output file: ``path`` itself for a single column named like a
    track file, else ``path/<name><suffix>``."""
    path = Path(path)
    if path.suffix.lower() in suffixes:
        if len(names) != 1:
            raise ChipviInputError(
                f"{path} is a single file but {len(names)} tracks were selected ({list(names)[:5]}); "
                "pass a folder, or select one library/group with samples=."
            )
        return {names[0]: path}
    bad = [n for n in names if not n or "/" in n or n in (".", "..")]
    if bad:
        raise ChipviInputError(f"Track names {bad} cannot be used as file names; rename them.")
    return {n: path / f"{n}{default_suffix}" for n in names}


def _prepare(
    adata: AnnData,
    path: str | os.PathLike,
    layer: str | None,
    key: str | None,
    samples: Sequence[str] | str | None,
    nan: NanPolicy,
    overwrite: bool,
    suffixes: tuple[str, ...],
    default_suffix: str,
):
    if nan not in ("skip", "zero", "error"):
        raise ChipviInputError(f"nan must be 'skip', 'zero' or 'error', not {nan!r}.")
    sizes = chrom_sizes(adata)
    frame = signal_frame(adata, layer=layer, key=key, columns=samples)
    order = genomic_order(adata, sizes)
    chrom, start, end = bin_coordinates(adata)
    values = _checked(frame.to_numpy(dtype=np.float64)[order], frame.columns, nan)
    targets = _targets([str(c) for c in frame.columns], path, overwrite, suffixes, default_suffix)
    return sizes, chrom[order], start[order], end[order], values, targets


def _checked(values: np.ndarray, columns, nan: NanPolicy) -> np.ndarray:
    """``values`` (bins × tracks) with the NaN policy applied; infinite values refused."""
    if np.isinf(values).any():
        col = columns[int(np.flatnonzero(np.isinf(values).any(axis=0))[0])]
        raise ChipviInputError(f"Track {col!r} has infinite values; clip or mask them first.")
    if nan == "error" and np.isnan(values).any():
        col = columns[int(np.flatnonzero(np.isnan(values).any(axis=0))[0])]
        raise ChipviInputError(
            f"Track {col!r} has NaN values; pass nan='skip' (leave them out) or nan='zero'."
        )
    return np.nan_to_num(values, nan=0.0) if nan == "zero" else values


def _targets(names, path, overwrite: bool, suffixes, default_suffix) -> dict[str, Path]:
    """Output file of each track, checked (none exists unless ``overwrite``), folders made."""
    targets = _track_targets(names, path, suffixes, default_suffix)
    folder = Path(path)
    if len(targets) > 1 or folder.suffix.lower() not in suffixes:
        if folder.exists() and not folder.is_dir():
            raise ChipviInputError(f"{folder} exists and is not a folder.")
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise ChipviInputError(
            f"{existing[0]} already exists ({len(existing)} of {len(targets)} tracks); "
            "pass overwrite=True to replace them."
        )
    for p in targets.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    return targets


def write_bigwig(
    adata: AnnData | BinStore,
    path: str | os.PathLike,
    *,
    layer: str | None = None,
    key: str | None = None,
    samples: Sequence[str] | str | None = None,
    nan: NanPolicy = "skip",
    overwrite: bool = False,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write per-bin values as bigWig tracks, one file per library or group.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout (obs = bins with ``chrom``/``start``/``end``;
        ``uns['chipvi']['chrom_sizes']`` gives the bigWig header), or a bins store
        (:func:`chipvi.io.open_store`, or its path), read and written a chunk of bins at a time.
    path
        A folder (created if needed; files are named ``<library or group>.bw``), or a file
        ending in ``.bw``/``.bigwig`` when exactly one track is selected.
    layer
        Library-level values in ``adata.layers[layer]``; ``None`` writes ``X`` (raw counts).
    key
        Group-level values in ``adata.obsm[key]`` (one track per group column).
    samples
        Libraries (or groups with ``key``) to write; default all.
    nan
        ``"skip"`` leaves NaN bins out of the file (no data in the browser), ``"zero"`` writes
        them as 0, ``"error"`` refuses to write.
    overwrite
        Replace existing files; otherwise an existing output is an error (checked for all files
        before any is written).
    transform
        Applied to the values (bins × tracks) before they are written, e.g. ``np.exp``.

    Returns
    -------
    dict
        Track name → written path.
    """
    sizes, targets, blocks = _tracks(adata, path, layer, key, samples, nan, overwrite,
                                     transform, _BIGWIG_SUFFIXES, ".bw")  # fmt: skip
    _write_bigwig_files(targets, sizes, blocks, overwrite)
    return dict(targets)


def _tracks(adata, path, layer, key, samples, nan, overwrite, transform, suffixes,
            default_suffix):  # fmt: skip
    """``(sizes, targets, blocks)`` of an AnnData (one block) or a store (block by block)."""
    if is_store(adata):
        return _store_tracks(open_store(adata), path, layer, key, samples, nan, overwrite,
                             transform, suffixes, default_suffix)  # fmt: skip
    sizes, chrom, start, end, values, targets = _prepare(
        adata, path, layer, key, samples, nan, overwrite, suffixes, default_suffix
    )
    if transform is not None:
        values = _checked(transform(values), list(targets), nan)
    return sizes, targets, [(chrom, start, end, values)]


def _write_bigwig_files(targets: dict[str, Path], sizes: dict[str, int], blocks,
                        overwrite: bool) -> None:  # fmt: skip
    """One bigWig per track of ``targets``, from ``blocks`` ``(chrom, start, end, values)``
    in genomic order (values bins × tracks, NaN left out); all written or none."""
    import pyBigWig

    with contextlib.ExitStack() as stack:
        files = []
        for target in targets.values():
            tmp = stack.enter_context(atomic_path(target, overwrite=overwrite))
            bw = pyBigWig.open(str(tmp), "w")
            stack.callback(bw.close)  # closed before its atomic_path moves it in place
            bw.addHeader(list(sizes.items()))
            files.append(bw)
        for chrom, start, end, values in blocks:
            for c, lo, hi in _chrom_runs(chrom):
                for col, bw in enumerate(files):
                    v = values[lo:hi, col]
                    keep = ~np.isnan(v)
                    if not keep.any():
                        continue
                    n = int(keep.sum())
                    bw.addEntries(
                        [c] * n,
                        start[lo:hi][keep].tolist(),
                        ends=end[lo:hi][keep].tolist(),
                        values=v[keep].tolist(),
                    )


def _store_tracks(store: BinStore, path, layer, key, samples, nan, overwrite, transform,
                  suffixes: tuple[str, ...], default_suffix: str):  # fmt: skip
    """``(sizes, targets, blocks)`` of a store's tracks: ``blocks`` yields ``(chrom, start,
    end, values)`` a block of bins at a time (bins are in genomic order)."""
    if key is None:
        store.require_layers([layer] if layer is not None else [])
        names, where = list(store.var.index), f"{store.path} (layer {layer})"
    else:
        names, where = list(store.obsm(key, 0, 0).columns), f"{store.path} (obsm {key})"
    names = select_columns(names, samples, where)
    targets = _targets(names, path, overwrite, suffixes, default_suffix)
    sizes = {str(c): int(n) for c, n in store.uns["chipvi"]["chrom_sizes"].items()}

    def blocks():
        for a, b in store.block_ranges():
            obs = store.obs(a, b, names=False)
            if key is None:
                frame = pd.DataFrame(store.array(layer, a, b), columns=list(store.var.index))
            else:
                frame = store.obsm(key, a, b)
            values = frame[names].to_numpy(dtype=np.float64)
            values = _checked(values if transform is None else transform(values), names, nan)
            yield (obs["chrom"].astype(str).to_numpy(), obs["start"].to_numpy(np.int64),
                   obs["end"].to_numpy(np.int64), values)  # fmt: skip

    return sizes, targets, blocks()


def write_bedgraph(
    adata: AnnData | BinStore,
    path: str | os.PathLike,
    *,
    layer: str | None = None,
    key: str | None = None,
    samples: Sequence[str] | str | None = None,
    nan: NanPolicy = "skip",
    overwrite: bool = False,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write per-bin values as bedGraph text tracks, one file per library or group.

    Same inputs (an AnnData or a bins store, read a chunk at a time), selection, NaN handling,
    ``transform`` and overwrite rules as :func:`write_bigwig`; files are named
    ``<library or group>.bedGraph`` (or ``path`` itself if it ends in ``.bedGraph``/``.bg``/
    ``.bdg`` and one track is selected). Lines are ``chrom start end value`` (0-based,
    half-open), sorted by chromosome (header order) and start; values use 6 significant digits.

    Returns
    -------
    dict
        Track name → written path.
    """
    _, targets, blocks = _tracks(adata, path, layer, key, samples, nan, overwrite, transform,
                                 _BEDGRAPH_SUFFIXES, ".bedGraph")  # fmt: skip
    with contextlib.ExitStack() as stack:
        files = []
        for target in targets.values():
            tmp = stack.enter_context(atomic_path(target, overwrite=overwrite))
            files.append(stack.enter_context(open(tmp, "w")))  # closed before it is moved
        for chrom, start, end, values in blocks:
            for col, fh in enumerate(files):
                v = values[:, col]
                keep = ~np.isnan(v)
                table = pd.DataFrame(
                    {"chrom": chrom[keep], "start": start[keep], "end": end[keep], "value": v[keep]}
                )
                table.to_csv(fh, sep="\t", header=False, index=False, float_format="%.6g")
    return dict(targets)


def _chrom_runs(chrom: np.ndarray) -> list[tuple[str, int, int]]:
    """(chrom, first, last+1) of each run of equal chromosome names in a sorted array."""
    if len(chrom) == 0:
        return []
    cut = np.flatnonzero(chrom[1:] != chrom[:-1]) + 1
    starts = np.r_[0, cut]
    ends = np.r_[cut, len(chrom)]
    return [(str(chrom[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def read_bigwig_bins(
    paths: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    adata: AnnData,
) -> pd.DataFrame:
    """Average bigWig tracks over the bins of ``adata``.

    Each bin gets the mean value over the bases of the bin that the track covers (weighted by
    covered length); bins with no covered base are NaN. A bin written by :func:`write_bigwig`
    therefore reads back as its written value (stored as float32).

    Parameters
    ----------
    paths
        One bigWig path, a list of paths (columns named by file stem) or a mapping
        column name → path.
    adata
        AnnData whose ``obs`` has ``chrom``, ``start``, ``end``.

    Returns
    -------
    pandas.DataFrame
        Bins × tracks, index ``adata.obs_names``.
    """
    import pyBigWig

    if isinstance(paths, Mapping):
        named = {str(k): Path(v) for k, v in paths.items()}
    elif isinstance(paths, (str, os.PathLike)):
        named = {Path(paths).stem: Path(paths)}
    else:
        named = {Path(p).stem: Path(p) for p in paths}
    for p in named.values():
        if not p.is_file():
            raise ChipviInputError(f"bigWig file {p} does not exist.")
    chrom, start, end = bin_coordinates(adata)
    out = pd.DataFrame(index=adata.obs_names, columns=list(named), dtype=np.float64)
    for name, p in named.items():
        bw = pyBigWig.open(str(p))
        if bw is None or not bw.isBigWig():
            raise ChipviInputError(f"{p} is not a bigWig file.")
        try:
            col = np.full(len(chrom), np.nan)
            header = bw.chroms()
            shared = [c for c in pd.unique(chrom) if c in header]
            if not shared:
                raise ChipviInputError(
                    f"{p} has no chromosome in common with the bins "
                    f"(file: {list(header)[:5]}, bins: {list(pd.unique(chrom))[:5]})."
                )
            for c in shared:
                rows = np.flatnonzero(chrom == c)
                intervals = bw.intervals(c) or ()
                col[rows] = _bin_means(
                    np.asarray(intervals, dtype=np.float64), start[rows], end[rows]
                )
        finally:
            bw.close()
        out[name] = col
    return out


def _bin_means(intervals: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Covered-length-weighted mean of piecewise-constant ``intervals`` (s, e, v) per bin."""
    if intervals.size == 0:
        return np.full(len(start), np.nan)
    s, e, v = intervals[:, 0], intervals[:, 1], intervals[:, 2]
    width = e - s

    def integral(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        # Integral of weight over [0, x): whole intervals before x plus the part of the one at x.
        before = np.r_[0.0, np.cumsum(weight * width)]
        k = np.searchsorted(s, x, side="right") - 1
        inside = np.clip(x - s[np.maximum(k, 0)], 0, width[np.maximum(k, 0)])
        part = np.where(k >= 0, weight[np.maximum(k, 0)] * inside, 0.0)
        return before[np.maximum(k, 0)] * (k >= 0) + part

    ones = np.ones_like(v)
    covered = integral(end.astype(float), ones) - integral(start.astype(float), ones)
    total = integral(end.astype(float), v) - integral(start.astype(float), v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(covered > 0, total / np.where(covered > 0, covered, 1.0), np.nan)
