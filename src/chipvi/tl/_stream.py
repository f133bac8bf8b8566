"""Exact statistics of columns of values read a block at a time.

:class:`chipvi._blocks.Moments` merges per-block centred sums (Chan et al.), so a Pearson correlation over
blocks equals the one over all values. :class:`ValueTable` keeps a column's distinct values
with their counts (and a sum of weights per value): ranks with ties as mid-ranks, the k-th
largest value and a sorted column's cumulative sums follow from it exactly, in memory set by
the number of distinct values (a count column: its largest count), not by the bins.

A column with more distinct values than a table may hold (``MAX_DISTINCT``) (a continuous posterior over a large
store) is ranked by :class:`Buckets` instead: about ``2^18`` value buckets cut at quantiles of
a regular sample, with every value the sample hits often kept as a bucket of its own (so heavy
ties stay exact). The k-th largest value is still exact (one more pass reads the values of the
bucket that holds it); ranks inside a bucket of several distinct values are taken as tied.
"""

from __future__ import annotations

import numpy as np

#: Distinct values a :class:`ValueTable` holds on a store before it gives way to buckets.
MAX_DISTINCT = 1 << 20
#: Values kept by a :class:`Sample` (bucket edges of an overflowing column).
SAMPLE_SIZE = 1 << 18


class ValueTable:
    """Distinct values of a column (ascending) with their counts and weight sums.

    Parameters
    ----------
    cap
        Most distinct values held (``None``: no limit); past it the table marks itself
        ``overflow`` and drops its contents.
    """

    def __init__(self, cap: int | None = None) -> None:
        self.cap = cap
        self.values = np.empty(0)
        self.counts = np.empty(0, dtype=np.int64)
        self.weights: np.ndarray | None = None  # weight sums, once weights are given
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._held = 0
        self.overflow = False

    def add(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        if self.overflow or not values.size:
            return
        if weights is None:
            u, c = np.unique(values, return_counts=True)
            w = None
        else:
            u, inverse, c = np.unique(values, return_inverse=True, return_counts=True)
            w = np.bincount(inverse, weights=weights, minlength=u.size)
            if self.weights is None:
                self.weights = np.zeros(self.values.size)
        self._parts.append((u, c, w))
        self._held += u.size
        if self._held > 2 * max(self.values.size, 1 << 16):
            self._merge()

    def _merge(self) -> None:
        if not self._parts:
            return
        parts = [(self.values, self.counts, self.weights), *self._parts]
        self._parts, self._held = [], 0
        u, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
        if self.cap is not None and u.size > self.cap:
            self.overflow = True
            self.values, self.counts, self.weights = np.empty(0), np.empty(0, np.int64), None
            return
        counts = np.concatenate([p[1] for p in parts])
        self.counts = np.bincount(inverse, weights=counts, minlength=u.size).astype(np.int64)
        if self.weights is not None:
            weights = np.concatenate([np.zeros(p[0].size) if p[2] is None else p[2]
                                      for p in parts])  # fmt: skip
            self.weights = np.bincount(inverse, weights=weights, minlength=u.size)
        self.values = u

    def finish(self) -> ValueTable:
        self._merge()
        return self

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def midranks(self) -> np.ndarray:
        """Rank (from 1) of each distinct value, ties at their mid-rank (scipy ``average``)."""
        ends = np.cumsum(self.counts)
        return ends - (self.counts - 1) / 2.0

    def rank(self, x: np.ndarray) -> np.ndarray:
        """Mid-ranks of values ``x`` (all in the table)."""
        return self.midranks()[np.searchsorted(self.values, x)]


def top_threshold(values: np.ndarray, counts: np.ndarray, k: int) -> tuple[int, int]:
    """``(i, quota)``: the k-th largest of a sorted table is ``values[i]``; the top ``k`` are
    all larger values and the first ``quota`` (in bin order) equal to it."""
    above = np.cumsum(counts[::-1])  # bins at least as large as each value, descending
    j = int(np.searchsorted(above, k, side="left"))
    i = counts.size - 1 - j
    return i, k - int(above[j] - counts[i])


class Sample:
    """A regular sample of at most ``size`` values of a column read in blocks (every
    ``stride``-th value; the stride doubles when full), deterministic and of fixed size."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size or SAMPLE_SIZE
        self.stride = 1
        self._seen = 0
        self._kept: list[np.ndarray] = []
        self._n = 0

    def add(self, values: np.ndarray) -> None:
        first = (-self._seen) % self.stride
        self._seen += values.size
        picked = values[first :: self.stride]
        self._kept.append(picked)
        self._n += picked.size
        while self._n > self.size:
            kept = np.concatenate(self._kept)[::2]
            self._kept, self._n = [kept], kept.size
            self.stride *= 2  # kept: the values at multiples of the new stride

    def values(self) -> np.ndarray:
        return np.sort(np.concatenate([np.empty(0), *self._kept]))


class Buckets:
    """Ranks of a column by value buckets: ``edges`` from a sample; a value equal to an edge
    falls in that edge's own bucket (odd codes), others between edges (even codes)."""

    def __init__(self, sample: np.ndarray, n_buckets: int | None = None) -> None:
        step = max(1, sample.size // (n_buckets or SAMPLE_SIZE))
        self.edges = np.unique(sample[::step])
        self.counts = np.zeros(2 * self.edges.size + 1, dtype=np.int64)

    def codes(self, x: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.edges, x, side="left")
        hit = np.zeros(x.size, dtype=bool)
        inside = i < self.edges.size
        hit[inside] = self.edges[i[inside]] == x[inside]
        return 2 * i + hit

    def add(self, x: np.ndarray) -> None:
        self.counts += np.bincount(self.codes(x), minlength=self.counts.size)

    def rank(self, x: np.ndarray) -> np.ndarray:
        ends = np.cumsum(self.counts)
        return (ends - (self.counts - 1) / 2.0)[self.codes(x)]
