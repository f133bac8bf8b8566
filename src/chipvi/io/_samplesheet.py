"""The sample sheet: one CSV row per ChIP library."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .._errors import ChipviInputError

REQUIRED_COLUMNS = ("sample", "bam", "control", "target", "group", "replicate")
DEPTH_COLUMNS = ("depth", "control_depth")


def read_samplesheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a sample sheet.

    The CSV has one row per ChIP library and the columns

    ``sample``
        Unique library name (becomes ``var_names``).
    ``bam``
        ChIP BAM file.
    ``control``
        Matched control (input) BAM file; may be empty (no control), and one control may serve
        several rows.
    ``target``
        Assayed protein or mark (e.g. ``H3K4me3``); may be empty.
    ``group``
        Biological source: replicates of one group share biology. Required.
    ``replicate``
        Replicate label within the group.
    ``depth``, ``control_depth`` (optional)
        Integer read totals that replace the counted ones, e.g. when the BAMs are a subset of a
        larger library. Empty cells keep the counted value.

    Relative BAM paths resolve against the sheet's folder. Cells are read as text and stripped of
    surrounding spaces; extra columns are kept.

    Parameters
    ----------
    path
        CSV file.

    Returns
    -------
    DataFrame with one row per library, text columns as ``str`` (``""`` for empty ``control``
    and ``target``), ``bam`` and ``control`` as absolute paths, and ``depth`` /
    ``control_depth`` (when present) as nullable ``Int64``.

    Raises
    ------
    ChipviInputError
        If the file is missing, a required column is missing, a sample name is empty or
        duplicated, a ``bam`` or ``group`` cell is empty, or a depth is not a non-negative
        integer. BAM files themselves are checked by :func:`chipvi.read_bams`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ChipviInputError(f"Sample sheet {path} does not exist.")
    try:
        sheet = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ChipviInputError(f"Sample sheet {path} is not a readable CSV file: {e}") from e
    sheet.columns = [str(c).strip() for c in sheet.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise ChipviInputError(
            f"Sample sheet {path} lacks column(s) {missing}; it needs "
            f"{','.join(REQUIRED_COLUMNS)} (optional: {','.join(DEPTH_COLUMNS)})."
        )
    if sheet.empty:
        raise ChipviInputError(f"Sample sheet {path} has no rows.")
    sheet = sheet.apply(lambda col: col.str.strip())

    def rows(mask) -> str:
        # Row numbers as in the file (header is line 1).
        return ", ".join(str(i + 2) for i in sheet.index[mask])

    for column in ("sample", "bam", "group"):
        empty = sheet[column] == ""
        if empty.any():
            raise ChipviInputError(
                f"Sample sheet {path}: empty '{column}' on line(s) {rows(empty)}; every library "
                f"needs a {column}."
            )
    duplicated = sheet["sample"].duplicated(keep=False)
    if duplicated.any():
        names = sorted(set(sheet.loc[duplicated, "sample"]))
        raise ChipviInputError(
            f"Sample sheet {path}: sample name(s) {names} appear more than once (lines "
            f"{rows(duplicated)}); sample names must be unique."
        )

    folder = path.absolute().parent
    for column in ("bam", "control"):
        sheet[column] = [
            str((folder / Path(p).expanduser()).absolute()) if p else "" for p in sheet[column]
        ]
    for column in DEPTH_COLUMNS:
        if column in sheet.columns:
            sheet[column] = _parse_depth(sheet[column], column, path)
    return sheet.reset_index(drop=True)


def _parse_depth(values: pd.Series, column: str, path: Path) -> pd.Series:
    parsed = pd.to_numeric(values.replace("", None), errors="coerce")
    bad = (values != "") & (parsed.isna() | (parsed < 0) | (parsed % 1 != 0))
    if bad.any():
        first = bad.idxmax()
        raise ChipviInputError(
            f"Sample sheet {path}: '{column}' must be a non-negative integer or empty, got "
            f"{values[first]!r} on line {first + 2}."
        )
    return parsed.astype("Int64")
