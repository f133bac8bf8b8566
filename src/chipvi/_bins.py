"""The bins layer under io, pp, tl and pl (like ``scanpy.get``): what a bin is and how to read it.

The bin table (``obs``: ``chrom``, ``start``, ``end``, names ``"chrom:start-end"``) of
fixed-width bins tiling each chromosome from 0, genomic order and coordinates, region strings,
overlap masks against intervals, and per-bin signal access (``X``, a layer, an obsm table or a
model's denoised values). Every subpackage reaches bins through here; this module imports no
other chipvi subpackage.

Interval matching uses numpy ``searchsorted`` on merged intervals rather than pyranges, whose
0.1.x ``join(how="left")`` reorders rows: the bin order is kept by construction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from ._errors import ChipviInputError

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

# pandas and anndata are imported inside the functions that need them: the binning path
# imports this module first and pays for them on its calling thread while reads are counted.


# --- bin table and names ---------------------------------------------------


def bin_count(contigs: Sequence[tuple[str, int]], bin_size: int) -> int:
    """Number of ``bin_size`` bins tiling the ``(name, length)`` contigs."""
    return sum(-(-length // bin_size) for _, length in contigs)


def bin_obs(contigs: Iterable[tuple[str, int]], bin_size: int) -> pd.DataFrame:
    """The ``obs`` table of fixed-width bins tiling each chromosome from 0.

    Parameters
    ----------
    contigs
        ``(name, length)`` pairs in the order the bins should appear.
    bin_size
        Bin width in bp; the last bin of a chromosome ends at the chromosome end.

    Returns
    -------
    DataFrame with index ``"chrom:start-end"`` and columns ``chrom`` (categorical, contig order),
    ``start`` and ``end`` (int64).
    """
    import pandas as pd

    contigs = [(str(name), int(length)) for name, length in contigs]
    names = [name for name, _ in contigs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ChipviInputError(
            f"Chromosome names {dup} appear more than once; bins need unique chromosome names "
            "(fix the BAM header's @SQ lines)."
        )
    lengths = np.array([length for _, length in contigs], np.int64)
    codes, start_end = _bin_table(lengths, bin_size)
    # start and end as one (2, bins) block, the layout pandas keeps them in: no copy.
    obs = pd.DataFrame(
        start_end.T,
        columns=["start", "end"],
        index=pd.Index(bin_names(contigs, bin_size), dtype=object, copy=False),
        copy=False,
    )
    obs.insert(0, "chrom", pd.Categorical.from_codes(codes, categories=names))
    return obs


@numba.njit(cache=True, nogil=True)
def _bin_table(lengths, bin_size):
    """Chromosome index, start and end of every bin, in one pass (whole-genome temporaries of
    numpy's repeat/arange cost ~0.6 s for a human genome)."""
    n_bins = 0
    for length in lengths:
        n_bins += -(-length // bin_size)
    codes = np.empty(n_bins, np.int32)
    start_end = np.empty((2, n_bins), np.int64)
    i = 0
    for k in range(lengths.size):
        length = lengths[k]
        start = 0
        while start < length:
            codes[i] = k
            start_end[0, i] = start
            start = min(start + bin_size, length)
            start_end[1, i] = start
            i += 1
    return codes, start_end


#: Bins whose names :func:`bin_names` makes per decode and split.
_NAME_CHUNK = 1 << 16


def bin_names(contigs: Sequence[tuple[str, int]], bin_size: int) -> np.ndarray:
    """``"chrom:start-end"`` of every bin, as an object array of str.

    Same strings as ``f"{chrom}:{start}-{end}"`` per bin, but written as bytes by a compiled
    loop and turned into str objects by one decode and split per piece of ``_NAME_CHUNK``
    bins (an f-string per bin costs ~0.4 s per million bins). Pieces keep the buffers small
    and in cache: for a human genome (15.4 M bins) one pass over whole-genome buffers took
    4.7 s and ~900 MB of transient memory.
    """
    encoded = [name.encode() + b":" for name, _ in contigs]
    lengths = np.array([length for _, length in contigs], np.int64)
    n_bins = -(-lengths // bin_size)
    total = int(n_bins.sum())
    names = np.empty(total, object)
    if not total:
        return names
    prefixes = np.frombuffer(b"".join(encoded), np.uint8)
    prefix_end = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    first_bin = np.concatenate([[0], np.cumsum(n_bins)])
    # Bytes per bin at most: prefix, two numbers of at most len(str(length)) digits, "-", "\n".
    width = max(
        len(e) + 2 * len(str(n)) + 2 for e, n in zip(encoded, lengths.tolist(), strict=True)
    )
    buf = np.empty(min(total, _NAME_CHUNK) * width, np.uint8)
    for begin in range(0, total, _NAME_CHUNK):
        end = min(begin + _NAME_CHUNK, total)
        used = _write_bin_names(buf, prefixes, prefix_end, lengths, first_bin, bin_size, begin, end)
        # Contig names cannot hold a newline (SAM header fields are tab/newline delimited), and
        # pieces end at a name's end, so no UTF-8 sequence is cut.
        names[begin:end] = str(buf[: used - 1].data, "utf-8").split("\n")
    return names


@numba.njit(cache=True, nogil=True)
def _write_bin_names(out, prefixes, prefix_end, lengths, first_bin, bin_size, begin, end):
    """Write prefix, start, "-", end and a newline for bins ``[begin, end)`` of the genome-wide
    order (``first_bin[k]``: index of contig k's first bin); returns the bytes written."""
    # The contig holding bin ``begin`` (side="right" skips contigs without bins).
    k = np.searchsorted(first_bin, begin, side="right") - 1
    pos = 0
    b = begin
    while b < end:
        p0 = prefix_end[k - 1] if k > 0 else 0
        p1 = prefix_end[k]
        length = lengths[k]
        stop = min(end, first_bin[k + 1])
        start = (b - first_bin[k]) * bin_size
        # Where the previous bin's end was written: the next start is the same digits.
        last, last_n = -1, 0
        while b < stop:
            for i in range(p0, p1):
                out[pos] = prefixes[i]
                pos += 1
            if last >= 0:
                for i in range(last_n):
                    out[pos + i] = out[last + i]
                pos += last_n
            else:
                pos = _write_decimal(out, pos, start)
            out[pos] = 45  # "-"
            start = min(start + bin_size, length)
            last = pos + 1
            pos = _write_decimal(out, last, start)
            last_n = pos - last
            out[pos] = 10  # "\n"
            pos += 1
            b += 1
        k += 1
    return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _write_decimal(out, pos, value):
    """Write the non-negative ``value`` in decimal at ``out[pos]``; returns the next position."""
    # Unsigned: division by 10 compiles to a multiply and shift, without the sign fix-ups of
    # Python's floor division.
    v = np.uint64(value)
    n = 1
    bound = np.uint64(10)
    while v >= bound and n < 20:
        bound *= np.uint64(10)
        n += 1
    for i in range(n - 1, -1, -1):
        out[pos + i] = np.uint8(48) + np.uint8(v % np.uint64(10))
        v //= np.uint64(10)
    return pos + n


# --- coordinates, order, regions, overlaps ----------------------------------


def chrom_sizes(adata: AnnData) -> dict[str, int]:
    """Chromosome sizes recorded by ``read_bams`` (``uns['chipvi']['chrom_sizes']``)."""
    sizes = adata.uns.get("chipvi", {}).get("chrom_sizes")
    if not sizes:
        raise ChipviInputError(
            "adata.uns['chipvi']['chrom_sizes'] is missing; build the AnnData with "
            "chipvi.read_bams or set it to {chrom: length}."
        )
    return {str(c): int(n) for c, n in dict(sizes).items()}


def bin_coordinates(adata: AnnData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(chrom, start, end)`` arrays of the bins (chrom as str objects)."""
    for col in ("chrom", "start", "end"):
        if col not in adata.obs:
            raise ChipviInputError(
                f"adata.obs has no column {col!r}; bins need chrom, start and end columns."
            )
    chrom = adata.obs["chrom"].astype(str).to_numpy()
    start = adata.obs["start"].to_numpy(dtype=np.int64)
    end = adata.obs["end"].to_numpy(dtype=np.int64)
    return chrom, start, end


def genomic_order(adata: AnnData, sizes: dict[str, int] | None = None) -> np.ndarray:
    """Indices that sort the bins by chromosome (header order) then start.

    Also checks that bins lie on known chromosomes, inside them, and do not overlap, so that
    writers can emit sorted, non-overlapping entries as bigWig/BED require.
    """
    sizes = chrom_sizes(adata) if sizes is None else sizes
    chrom, start, end = bin_coordinates(adata)
    rank_of = {c: i for i, c in enumerate(sizes)}
    unknown = sorted(set(np.unique(chrom)) - set(rank_of))
    if unknown:
        raise ChipviInputError(
            f"Bins on chromosome(s) {unknown[:5]} that are not in uns['chipvi']['chrom_sizes']."
        )
    rank = np.array([rank_of[c] for c in chrom], dtype=np.int64) if len(chrom) else np.zeros(0, int)
    order = np.lexsort((start, rank))
    c, s, e = chrom[order], start[order], end[order]
    lengths = np.array([sizes[x] for x in c], dtype=np.int64) if len(c) else np.zeros(0, int)
    bad = (s < 0) | (e <= s) | (e > lengths)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ChipviInputError(
            f"Bin {c[i]}:{s[i]}-{e[i]} is empty or lies outside its chromosome "
            f"(length {lengths[i]})."
        )
    same = c[1:] == c[:-1]
    overlap = same & (s[1:] < e[:-1])
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        raise ChipviInputError(
            f"Bins {c[i]}:{s[i]}-{e[i]} and {c[i + 1]}:{s[i + 1]}-{e[i + 1]} overlap; "
            "tracks need non-overlapping bins."
        )
    return order


def interval_bin_ranges(
    adata: AnnData, chrom: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each interval, the bins of ``adata`` it overlaps, as a range in genomic order.

    Returns ``(order, first, last)``: ``order`` sorts the bins into genomic order (see
    :func:`genomic_order`) and interval k overlaps the sorted bins ``first[k]:last[k]``
    (empty when ``first == last``, e.g. on a chromosome without bins). Fixed-width bins make
    this a pair of ``searchsorted`` calls per chromosome, so no interval library is needed.
    """
    order = genomic_order(adata)
    bchrom, bstart, bend = (a[order] for a in bin_coordinates(adata))
    chrom = np.asarray(chrom).astype(str)
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    first = np.zeros(len(chrom), dtype=np.int64)
    last = np.zeros(len(chrom), dtype=np.int64)
    for c in np.unique(chrom):
        rows = np.flatnonzero(chrom == c)
        on = np.flatnonzero(bchrom == c)
        if on.size == 0:
            continue
        lo, hi = on[0], on[-1] + 1
        # Bin b overlaps [s, e) when bend[b] > s and bstart[b] < e.
        first[rows] = lo + np.searchsorted(bend[lo:hi], start[rows], side="right")
        last[rows] = lo + np.searchsorted(bstart[lo:hi], end[rows], side="left")
    last = np.maximum(last, first)
    return order, first, last


def overlap_mask(adata: AnnData, chrom, start, end) -> np.ndarray:
    """Boolean per bin (in ``adata`` order): does the bin overlap any of the intervals?"""
    import pandas as pd

    intervals = pd.DataFrame(
        {
            "chrom": np.asarray(chrom).astype(str),
            "start": np.asarray(start, dtype=np.int64),
            "end": np.asarray(end, dtype=np.int64),
        }
    )
    return overlapping_bins(adata.obs, intervals)


def overlapping_bins(obs: pd.DataFrame, intervals: pd.DataFrame) -> np.ndarray:
    """Which bins overlap at least one interval (by at least one base).

    Parameters
    ----------
    obs
        Bins with columns ``chrom``, ``start``, ``end`` (any order, any widths).
    intervals
        Intervals with columns ``chrom``, ``start``, ``end``; chromosomes absent from ``obs``
        are ignored, zero-length intervals overlap nothing.

    Returns
    -------
    numpy.ndarray
        Boolean mask aligned with the rows of ``obs``.
    """
    mask = np.zeros(len(obs), dtype=bool)
    bin_chrom = obs["chrom"].astype(str).to_numpy()
    bin_start = obs["start"].to_numpy(np.int64)
    bin_end = obs["end"].to_numpy(np.int64)
    intervals = intervals[intervals["end"] > intervals["start"]]
    for chrom, iv in intervals.groupby(intervals["chrom"].astype(str), sort=False):
        rows = np.flatnonzero(bin_chrom == chrom)
        if rows.size == 0:
            continue
        starts, ends = _merge(iv["start"].to_numpy(np.int64), iv["end"].to_numpy(np.int64))
        # Last merged interval starting before the bin's end; it overlaps if it ends after the
        # bin's start (merged intervals are disjoint and sorted, so no other one can).
        k = np.searchsorted(starts, bin_end[rows], side="left") - 1
        hit = k >= 0
        hit[hit] = ends[k[hit]] > bin_start[rows][hit]
        mask[rows] = hit
    return mask


def _merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge overlapping or touching intervals into sorted, disjoint ones."""
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    running_end = np.maximum.accumulate(ends)
    new = np.r_[True, starts[1:] > running_end[:-1]]
    group = np.cumsum(new) - 1
    merged_ends = np.zeros(group[-1] + 1, dtype=np.int64)
    np.maximum.at(merged_ends, group, ends)
    return starts[new], merged_ends


_REGION = re.compile(r"^\s*([^:\s]+)(?::\s*([\d,_]+)\s*-\s*([\d,_]+))?\s*$")


def parse_region(
    region: str, chrom_sizes: Mapping[str, int] | None = None, *, what: str = "region"
) -> tuple[str, int, int]:
    """Parse ``"chr1:1,000,000-1,200,000"`` (or a bare ``"chr1"``) into ``(chrom, start, end)``.

    Coordinates are 0-based half-open, like BED; commas and underscores are ignored. With
    ``chrom_sizes`` the chromosome must exist and the region must lie inside it; a bare
    chromosome name then means the whole chromosome.

    Parameters
    ----------
    region
        The region string.
    chrom_sizes
        Chromosome lengths to check against (e.g. ``adata.uns["chipvi"]["chrom_sizes"]``).
    what
        How error messages name the value (e.g. ``"config key 'data.region'"``).
    """
    if not isinstance(region, str):
        raise ChipviInputError(f"{what} must be a string like 'chr1:1,000-2,000', not {region!r}.")
    m = _REGION.match(region)
    if m is None or (m.group(2) is None and chrom_sizes is None):
        raise ChipviInputError(
            f"{what} {region!r} does not parse; write it as 'chrom:start-end', e.g. "
            "'chr1:1,000,000-1,200,000'."
        )
    chrom = m.group(1)
    if chrom_sizes is not None and chrom not in chrom_sizes:
        names = list(chrom_sizes)
        raise ChipviInputError(
            f"{what} {region!r}: chromosome {chrom!r} is not in the data (chromosomes: "
            f"{', '.join(map(str, names[:10]))}{', ...' if len(names) > 10 else ''})."
        )
    if m.group(2) is None:
        return chrom, 0, int(chrom_sizes[chrom])
    start = int(m.group(2).replace(",", "").replace("_", ""))
    end = int(m.group(3).replace(",", "").replace("_", ""))
    if end <= start:
        raise ChipviInputError(f"{what} {region!r}: end must be greater than start.")
    if chrom_sizes is not None and end > int(chrom_sizes[chrom]):
        size = int(chrom_sizes[chrom])
        raise ChipviInputError(
            f"{what} {region!r} lies outside {chrom} (length {size:,}); end must be <= {size:,}."
        )
    return chrom, start, end


def region_mask(obs: pd.DataFrame, chrom: str, start: int, end: int) -> np.ndarray:
    """Which bins overlap the region ``chrom:[start, end)`` (by at least one base)."""
    return (
        (obs["chrom"].astype(str) == chrom).to_numpy()
        & (obs["end"].to_numpy(np.int64) > start)
        & (obs["start"].to_numpy(np.int64) < end)
    )


def blacklist_mask(obs: pd.DataFrame, intervals: pd.DataFrame, source: str) -> np.ndarray:
    """Bins overlapping a blacklist (see :func:`overlapping_bins`); an error if that is all.

    ``source`` names the blacklist in the message (a path or ``"<DataFrame>"``).
    """
    hit = overlapping_bins(obs, intervals)
    if hit.all():
        raise ChipviInputError(
            f"the blacklist {source} covers every bin; check that it matches the genome build."
        )
    return hit


def blacklist_record(info: Mapping, removed: pd.DataFrame, n_intervals: int, source: str) -> dict:
    """``uns["chipvi"]`` with ``removed`` bins added to its ``"filter_blacklist"`` record.

    The record sums over repeated calls: ``bed`` (sources, ``;``-separated), ``n_intervals``,
    ``n_bins_removed``, ``bp_removed`` and ``bins_removed_by_chrom``.
    """
    info = dict(info)
    previous = dict(info.get("filter_blacklist", {}))
    counts = dict(previous.get("bins_removed_by_chrom", {}))
    for chrom, n in removed["chrom"].astype(str).value_counts(sort=False).items():
        counts[chrom] = int(counts.get(chrom, 0)) + int(n)
    info["filter_blacklist"] = {
        "bed": ";".join(filter(None, [previous.get("bed", ""), source])),
        "n_intervals": int(previous.get("n_intervals", 0)) + int(n_intervals),
        "n_bins_removed": int(previous.get("n_bins_removed", 0)) + len(removed),
        "bp_removed": int(previous.get("bp_removed", 0))
        + int((removed["end"] - removed["start"]).sum()),
        "bins_removed_by_chrom": counts,
    }
    return info


def run_starts(obs: pd.DataFrame) -> np.ndarray:
    """``(bins,)`` bool: where a new chain of adjacent bins starts.

    A chain starts at the first bin, where ``obs["chrom"]`` changes and, with ``start`` /
    ``end`` columns, where a bin does not start at the previous one's end (bins removed by a
    blacklist, say). Without these columns all bins form one chain.
    """
    codes = np.asarray(obs["chrom"].astype("category").cat.codes) if "chrom" in obs else None
    if "start" in obs and "end" in obs:
        return chain_starts(len(obs), codes, obs["start"].to_numpy(), obs["end"].to_numpy())
    return chain_starts(len(obs), codes)


def chain_starts(
    n: int,
    codes: np.ndarray | None = None,
    start: np.ndarray | None = None,
    end: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`run_starts` on arrays of ``n`` bins: a chain starts at the first bin, where
    ``codes`` (each bin's chromosome) changes and where ``start`` is not the previous
    ``end`` (each test skipped when its arrays are not given)."""
    new = np.zeros(n, bool)
    if n == 0:
        return new
    new[0] = True
    if codes is not None:
        new[1:] |= codes[1:] != codes[:-1]
    if start is not None and end is not None:
        new[1:] |= start[1:] != end[:-1]
    return new


def chrom_codes(obs: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Integer code of each bin's chromosome and the names the codes index (no str per bin)."""
    import pandas as pd

    chrom = obs["chrom"]
    cat = (
        chrom.cat if isinstance(chrom.dtype, pd.CategoricalDtype) else chrom.astype("category").cat
    )
    return cat.codes.to_numpy(np.int64), [str(c) for c in cat.categories]


def tiled_windows(
    obs: pd.DataFrame, sizes: Mapping[str, int], bin_size: int
) -> list[tuple[str, int, int]] | None:
    """The windows a bin table tiles, or None when it is not a tiling.

    A tiling has, per chromosome (in the order of ``sizes``, each once), a gap-free run of the
    fixed-width bins that tile the chromosome from 0: the whole chromosome as ``read_bams``
    writes it, or a crop of it (``read_bams(region=...)``, :func:`chipvi.pp.filter_region`).
    Returns ``[(chrom, first bin start, last bin end), ...]`` in bin order.
    """
    codes, categories = chrom_codes(obs)
    start = obs["start"].to_numpy(np.int64)
    end = obs["end"].to_numpy(np.int64)
    if not len(codes):
        return None
    breaks = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    firsts, lasts = np.r_[0, breaks], np.r_[breaks, len(codes)] - 1
    names = [categories[k] for k in codes[firsts]]
    rank = {c: i for i, c in enumerate(sizes)}
    if len(set(names)) != len(names) or any(c not in rank for c in names):
        return None
    if [rank[c] for c in names] != sorted(rank[c] for c in names):
        return None
    length = np.repeat(np.array([sizes[c] for c in names], np.int64), lasts - firsts + 1)
    on_grid = (start % bin_size == 0) & (end == np.minimum(start + bin_size, length))
    contiguous = start[1:] == end[:-1]
    contiguous[breaks - 1] = True  # a new chromosome starts anywhere on its grid
    if not (on_grid.all() and contiguous.all()):
        return None
    return [
        (c, int(start[first]), int(end[last]))
        for c, first, last in zip(names, firsts, lasts, strict=True)
    ]


def windows_obs(windows: Sequence[tuple[str, int, int]], bin_size: int, chroms) -> pd.DataFrame:
    """The bin table of ``bin_size`` bins (grid from 0) over ``(chrom, start, end)`` windows.

    Edge bins are cut to the window, as the last bin of a chromosome is cut to its end.
    ``chroms`` are the categories of ``obs["chrom"]``.
    """
    import pandas as pd

    chrom, start, end = [], [], []
    for c, lo, hi in windows:
        edges = np.r_[lo, np.arange((lo // bin_size + 1) * bin_size, hi, bin_size), hi]
        chrom += [c] * (len(edges) - 1)
        start.append(edges[:-1])
        end.append(edges[1:])
    s = np.concatenate(start).astype(np.int64) if start else np.zeros(0, np.int64)
    e = np.concatenate(end).astype(np.int64) if end else np.zeros(0, np.int64)
    names = [f"{c}:{a}-{b}" for c, a, b in zip(chrom, s.tolist(), e.tolist(), strict=True)]
    obs = pd.DataFrame({"start": s, "end": e}, index=pd.Index(names, dtype=object))
    obs.insert(0, "chrom", pd.Categorical(chrom, categories=list(chroms)))
    return obs


# --- signal access -----------------------------------------------------------


def signal_frame(
    adata: AnnData,
    *,
    layer: str | None = None,
    key: str | None = None,
    columns: Sequence[str] | str | None = None,
) -> pd.DataFrame:
    """Return a bins × columns DataFrame of float values from ``X``, a layer or an obsm table.

    Parameters
    ----------
    adata
        AnnData in the chipvi layout (obs = bins).
    layer
        Library-level values in ``adata.layers[layer]``; ``None`` (and no ``key``) means ``X``.
    key
        Group-level values in ``adata.obsm[key]`` (DataFrame with group columns, or an array
        whose columns are taken as ``var_names``). Exclusive with ``layer``.
    columns
        Subset of libraries (``var_names``) or groups (obsm columns) to keep, in this order.
    """
    import pandas as pd

    if layer is not None and key is not None:
        raise ChipviInputError(
            "Pass either layer= (library level) or key= (group level), not both."
        )
    if key is not None:
        if key not in adata.obsm:
            raise ChipviInputError(
                f"adata.obsm has no key {key!r}; available: {sorted(adata.obsm.keys())}."
            )
        value = adata.obsm[key]
        if isinstance(value, pd.DataFrame):
            frame = value.astype(np.float64)
            frame.index = adata.obs_names
        else:
            arr = np.asarray(value, dtype=np.float64)
            names = (
                list(adata.var_names) if arr.shape[1] == adata.n_vars else list(range(arr.shape[1]))
            )
            frame = pd.DataFrame(arr, index=adata.obs_names, columns=[str(n) for n in names])
        where = f"adata.obsm[{key!r}]"
    else:
        if layer is None:
            matrix = adata.X
            where = "adata.X"
        else:
            if layer not in adata.layers:
                raise ChipviInputError(
                    f"adata.layers has no layer {layer!r}; available: {sorted(adata.layers.keys())}."
                )
            matrix = adata.layers[layer]
            where = f"adata.layers[{layer!r}]"
        if hasattr(matrix, "toarray"):
            matrix = matrix.toarray()
        frame = pd.DataFrame(
            np.asarray(matrix, dtype=np.float64), index=adata.obs_names, columns=adata.var_names
        )
    if columns is not None:
        frame = frame[select_columns(list(frame.columns), columns, where)]
    return frame


def select_columns(available: list, columns: Sequence[str] | str | None, where: str) -> list:
    """``columns`` (one name or several; ``None``: all ``available``), each checked."""
    if columns is None:
        return list(available)
    wanted = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ChipviInputError(f"{where} has no column(s) {missing}; available: {available}.")
    return wanted


def log_cpm(adata: AnnData, layer: str | None = None) -> pd.DataFrame:
    """log1p of counts per million (per library, using ``var['depth']`` when present)."""
    counts = signal_frame(adata, layer=layer)
    depth = (
        adata.var["depth"].to_numpy(dtype=np.float64)
        if "depth" in adata.var
        else counts.sum(axis=0).to_numpy()
    )
    depth = np.where(depth > 0, depth, 1.0)
    return np.log1p(counts * (1e6 / depth))


def library_signal(adata: AnnData, source: Any) -> pd.DataFrame:
    """Library-level values from a layer name or a bins × libraries DataFrame."""
    import pandas as pd

    if isinstance(source, str):
        return signal_frame(adata, layer=source)
    if isinstance(source, pd.DataFrame):
        if list(source.columns) != list(adata.var_names) or len(source) != adata.n_obs:
            raise ChipviInputError(
                "A denoised DataFrame must be bins × libraries with adata's obs and var names."
            )
        return source.astype(np.float64)
    raise ChipviInputError(
        f"denoised must be a layer name (e.g. 'chipvi_lfe' after model.add_posterior(adata)) or "
        f"a DataFrame, not {type(source).__name__}."
    )
