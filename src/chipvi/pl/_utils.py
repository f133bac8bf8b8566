"""Shared plumbing for chipvi plots: region strings, figure saving, showing."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._errors import ChipviInputError
from .._utils import atomic_path

_REGION = re.compile(r"^\s*([^:\s]+)(?::\s*([\d,_]+)\s*-\s*([\d,_]+))?\s*$")


def parse_region(region: str, chrom_sizes: dict[str, int]) -> tuple[str, int, int]:
    """Parse ``"chr1:1,000,000-1,200,000"`` (or a bare ``"chr1"``) into 0-based ``(chrom, start, end)``.

    Coordinates are read as 0-based half-open, like BED; commas and underscores are ignored.
    """
    if not isinstance(region, str):
        raise ChipviInputError(f"region must be a string like 'chr1:1,000-2,000', not {region!r}.")
    m = _REGION.match(region)
    if m is None:
        raise ChipviInputError(
            f"Cannot parse region {region!r}; write it as 'chrom:start-end', e.g. "
            "'chr1:1,000,000-1,200,000'."
        )
    chrom = m.group(1)
    if chrom not in chrom_sizes:
        raise ChipviInputError(
            f"Region {region!r}: chromosome {chrom!r} is not in the data "
            f"(chromosomes: {list(chrom_sizes)[:10]})."
        )
    size = int(chrom_sizes[chrom])
    if m.group(2) is None:
        return chrom, 0, size
    start = int(m.group(2).replace(",", "").replace("_", ""))
    end = int(m.group(3).replace(",", "").replace("_", ""))
    if end <= start:
        raise ChipviInputError(f"Region {region!r}: end must be greater than start.")
    if end > size:
        raise ChipviInputError(
            f"Region {region!r} lies outside {chrom} (length {size:,}); end must be <= {size:,}."
        )
    return chrom, start, end


def finish(fig, *, show: bool | None, save: str | os.PathLike | None, overwrite: bool) -> None:
    """Save (atomically; refuses an existing file unless ``overwrite``) and/or show a figure."""
    if save is not None:
        save = Path(save)
        fmt = save.suffix.lstrip(".").lower() or "png"
        with atomic_path(save, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    if show:
        import matplotlib.pyplot as plt

        plt.show()


def check_save(save: str | os.PathLike | None, overwrite: bool) -> None:
    """Refuse an existing output before drawing anything."""
    if save is not None and Path(save).exists() and not overwrite:
        raise ChipviInputError(f"{save} already exists; pass overwrite=True to replace it.")
