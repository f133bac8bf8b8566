"""BED files: :func:`read_bed` (bins are matched against intervals in :mod:`chipvi._bins`)."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import ChipviInputError

BED_COLUMNS = ("chrom", "start", "end", "name", "score", "strand")


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


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
    data = _read_bytes(path)
    lines = _Lines(data)
    keep = lines.data_lines()
    # Lines without a tab are split at any whitespace; a file mixing both is rewritten so.
    spaced = keep & (lines.tabs == 0)
    if spaced.any() and (keep & (lines.tabs > 0)).any():
        data = lines.tabbed(spaced)
        lines = _Lines(data)
        spaced[:] = False
    whitespace = bool(spaced.any())
    fields = lines.fields(whitespace)
    short = keep & (fields < 3)
    if short.any():
        k = int(np.flatnonzero(short)[0])
        raise ChipviInputError(
            f"{path}, line {k + 1}: expected at least 3 fields (chrom, start, end), got "
            f"{int(fields[k])}: {lines.text(k)[:80]!r}."
        )
    width = int(fields[keep].max()) if keep.any() else 3
    names = list(BED_COLUMNS[:width]) + [f"col{i + 1}" for i in range(len(BED_COLUMNS), width)]
    if not keep.any():
        table = pd.DataFrame({n: pd.Series(dtype=str) for n in names})
        return table.astype({"start": np.int64, "end": np.int64})
    line_no = np.flatnonzero(keep) + 1
    skip, ragged = np.flatnonzero(~keep), bool((fields[keep] < width).any())
    table = _parse(data, names, skip, whitespace, ragged)
    try:
        # int() of each string, as the BED definition reads them ("1e3" and "1.5" are errors).
        start, end = (table[c].to_numpy().astype(np.int64) for c in ("start", "end"))
    except ValueError:
        for k, (a, b) in enumerate(zip(table["start"], table["end"], strict=True)):
            if not (_is_int(a) and _is_int(b)):
                raise ChipviInputError(
                    f"{path}, line {line_no[k]}: start and end must be integers, got {a!r} "
                    f"and {b!r}."
                ) from None
    table["start"], table["end"] = start, end
    bad = (start < 0) | (end < start)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ChipviInputError(
            f"{path}, line {line_no[k]}: need 0 <= start <= end, got start={start[k]}, "
            f"end={end[k]}."
        )
    return table


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _parse(
    data: bytes, names: list[str], skip: np.ndarray, whitespace: bool, ragged: bool
) -> pd.DataFrame:
    """The kept lines as a DataFrame of strings (pandas' C parser)."""
    table = pd.read_csv(
        io.BytesIO(data),
        sep=r"\s+" if whitespace else "\t",
        header=None,
        names=names,
        dtype=str,
        skiprows=set(skip.tolist()),
        skip_blank_lines=False,
        quoting=csv.QUOTE_NONE,
        na_filter=False,
        engine="c",
    )
    if ragged:  # lines shorter than the widest: their missing fields are ""
        table = table.fillna("")
    return table


#: Whitespace bytes (as ``bytes.split`` sees them, newline aside): space, \t, \r, \v, \f.
_SPACE = [32, 9, 13, 11, 12]


class _Lines:
    """Line boundaries, tab counts and kinds of a file's bytes, found with numpy."""

    def __init__(self, data: bytes):
        self.data = data
        raw = np.frombuffer(data, np.uint8)
        newline = np.flatnonzero(raw == 10)
        self.starts = np.r_[0, newline + 1]
        self.ends = np.r_[newline, raw.size]  # exclusive, before the newline
        if self.ends.size and self.starts[-1] == raw.size:  # no line after the final newline
            self.starts, self.ends = self.starts[:-1], self.ends[:-1]
        self._raw = raw
        self.tabs = self._per_line(raw == 9)

    def _per_line(self, flag: np.ndarray) -> np.ndarray:
        """How many flagged bytes each line holds."""
        line = np.searchsorted(self.starts, np.flatnonzero(flag), side="right") - 1
        return np.bincount(line, minlength=self.starts.size)

    def data_lines(self) -> np.ndarray:
        """Lines holding records: not blank, not ``#``, ``track`` or ``browser`` lines."""
        raw, starts, ends = self._raw, self.starts, self.ends
        first = raw[np.minimum(starts, max(raw.size - 1, 0))] if raw.size else np.zeros(0, np.uint8)
        keep = ends > starts
        # Blank lines start empty or with whitespace: only those few are looked at one by one.
        for k in np.flatnonzero(keep & np.isin(first, _SPACE)):
            keep[k] = bool(self.data[starts[k] : ends[k]].strip())
        for prefix in (b"#", b"track", b"browser"):
            hit = keep & (ends - starts >= len(prefix)) & (first == prefix[0])
            for i, byte in enumerate(prefix[1:], start=1):
                rows = np.flatnonzero(hit)
                hit[rows] = raw[starts[rows] + i] == byte
            keep &= ~hit
        return keep

    def fields(self, whitespace: bool) -> np.ndarray:
        """Fields per line: tabs + 1, or runs of non-whitespace when split at whitespace."""
        if not whitespace:
            return self.tabs + 1
        raw = self._raw
        word = ~np.isin(raw, _SPACE + [10])
        begins = word & ~np.r_[False, word[:-1]]
        return self._per_line(begins)

    def text(self, k: int) -> str:
        return self.data[self.starts[k] : self.ends[k]].decode(errors="replace").rstrip("\r")

    def tabbed(self, spaced: np.ndarray) -> bytes:
        """The bytes with the ``spaced`` lines' whitespace runs turned into single tabs."""
        out = []
        for k in range(self.starts.size):
            line = self.data[self.starts[k] : self.ends[k]]
            out.append(b"\t".join(line.split()) if spaced[k] else line)
        return b"\n".join(out) + b"\n"


# Moved to the bins layer; kept importable here for benchmarks/bench_quality.py (being rewritten:
# it should import ``chipvi._bins.overlapping_bins``). Remove with that rewrite.
from .._bins import overlapping_bins  # noqa: E402, F401
