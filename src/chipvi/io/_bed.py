"""BED reading and the one interval-overlap helper for bins.

Interval operations stay behind this module: pyranges 0.1.x ``join(how="left")`` reorders rows,
so bins (sorted, fixed order) are matched against intervals with numpy ``searchsorted`` on
merged intervals instead, which keeps the bin order by construction.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import ChipviInputError

BED_COLUMNS = ("chrom", "start", "end", "name", "score", "strand")


def _open_text(path: Path):
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gzipped else open(path)  # noqa: SIM115


def read_bed(path: str | os.PathLike) -> pd.DataFrame:
    """Read a BED file (plain or gzipped) into a DataFrame.

    ``track``, ``browser`` and ``#`` lines and blank lines are skipped. Fields are
    tab-separated (any whitespace if a line has no tab).

    Parameters
    ----------
    path
        BED file with at least ``chrom``, ``start`` and ``end`` (0-based, half-open).

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom`` (str), ``start``, ``end`` (int64), then ``name``, ``score``,
        ``strand`` and ``col7``, ... as strings for as many further fields as the widest line
        has (missing fields are ``""``), in file order.

    Raises
    ------
    ChipviInputError
        The file is missing, or a line (named by file and line number) has fewer than three
        fields, a non-integer or negative coordinate, or ``end < start``.
    """
    path = Path(path)
    if not path.is_file():
        raise ChipviInputError(f"BED file {path} does not exist.")
    rows: list[list[str]] = []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            where = f"{path}, line {lineno}"
            if len(fields) < 3:
                raise ChipviInputError(
                    f"{where}: expected at least 3 fields (chrom, start, end), got {len(fields)}: "
                    f"{line[:80]!r}."
                )
            try:
                start, end = int(fields[1]), int(fields[2])
            except ValueError:
                raise ChipviInputError(
                    f"{where}: start and end must be integers, got {fields[1]!r} and {fields[2]!r}."
                ) from None
            if start < 0 or end < start:
                raise ChipviInputError(
                    f"{where}: need 0 <= start <= end, got start={start}, end={end}."
                )
            rows.append(fields)
    width = max((len(r) for r in rows), default=3)
    names = list(BED_COLUMNS[:width]) + [f"col{i + 1}" for i in range(len(BED_COLUMNS), width)]
    table = pd.DataFrame([r + [""] * (width - len(r)) for r in rows], columns=names, dtype=str)
    if not rows:
        table = pd.DataFrame({n: pd.Series(dtype=str) for n in names})
    table["start"] = table["start"].astype(np.int64)
    table["end"] = table["end"].astype(np.int64)
    return table


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
