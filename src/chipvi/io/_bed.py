"""BED files: :func:`read_bed` (bins are matched against intervals in :mod:`chipvi._bins`)."""

from __future__ import annotations

import gzip
import os
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


# Moved to the bins layer; kept importable here for benchmarks/bench_quality.py (being rewritten:
# it should import ``chipvi._bins.overlapping_bins``). Remove with that rewrite.
from .._bins import overlapping_bins  # noqa: E402, F401
