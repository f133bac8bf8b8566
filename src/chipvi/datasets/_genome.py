"""The simulated genome's bins and the random shapes drawn on them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

TRUTH_BIN_SIZE = 200


@dataclass
class Genome:
    """Bins of all chromosomes concatenated."""

    chrom_sizes: dict[str, int]
    chrom_of_bin: np.ndarray  # int index into chrom_sizes
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray  # first global bin of each chromosome (+ total at the end)

    @property
    def n_bins(self) -> int:
        return len(self.start)

    @property
    def width(self) -> np.ndarray:
        return (self.end - self.start).astype(np.float64)


def make_genome(chrom_sizes: Mapping[str, int], step: int = TRUTH_BIN_SIZE) -> Genome:
    """Bins of ``step`` bp (the last of a chromosome may be shorter)."""
    starts, ends, chrom_idx, offsets = [], [], [], [0]
    for i, length in enumerate(chrom_sizes.values()):
        s = np.arange(0, length, step, dtype=np.int64)
        starts.append(s)
        ends.append(np.minimum(s + step, length))
        chrom_idx.append(np.full(len(s), i, dtype=np.int64))
        offsets.append(offsets[-1] + len(s))
    return Genome(
        dict(chrom_sizes),
        np.concatenate(chrom_idx),
        np.concatenate(starts),
        np.concatenate(ends),
        np.asarray(offsets),
    )


def smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Zero-mean, unit-sd noise smoothed by a moving average over ``width`` bins."""
    raw = rng.standard_normal(n + 2 * width)
    kernel = np.hanning(2 * width + 1)
    smooth = np.convolve(raw, kernel / kernel.sum(), mode="same")[width : width + n]
    sd = smooth.std()
    return (smooth - smooth.mean()) / (sd if sd > 0 else 1.0)


def place_intervals(
    rng: np.random.Generator,
    genome: Genome,
    occupied: np.ndarray,
    n: int,
    widths: np.ndarray,
    gap: int = 2,
) -> list[tuple[int, int]]:
    """Place ``n`` intervals of the given widths (in bins) on free bins of one chromosome each.

    ``occupied`` is updated in place; an interval that finds no room in 200 tries is dropped.
    """
    placed = []
    for k in range(n):
        w = int(widths[k])
        for _ in range(200):
            c = rng.integers(len(genome.offsets) - 1)
            lo, hi = genome.offsets[c], genome.offsets[c + 1]
            if hi - lo < w + 2 * gap:
                continue
            s = int(rng.integers(lo + gap, hi - w - gap + 1))
            if not occupied[s - gap : s + w + gap].any():
                occupied[s : s + w] = True
                placed.append((s, s + w))
                break
    return placed
