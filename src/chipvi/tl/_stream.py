"""Exact statistics of columns of values read a block at a time.

:class:`chipvi._blocks.Moments` merges per-block centred sums (Chan et al.), so a Pearson
correlation over blocks equals the one over all values. :class:`ValueTable` keeps a column's distinct values
with their counts (and a sum of weights per value): ranks with ties as mid-ranks, the k-th
largest value and a sorted column's cumulative sums follow from it exactly, in memory set by
the number of distinct values (a count column: its largest count), not by the bins.

A column with more distinct values than a table may hold (``MAX_DISTINCT``; a continuous
posterior over a large store) is ranked by :class:`SpilledRanks`: about ``2^18`` value buckets
cut at quantiles of a regular :class:`Sample`, every value the sample hits kept as a bucket of
its own (so heavy ties cost nothing); the values of the other buckets go to files on disk, a
group of buckets is ranked at a time, and the ranks come back in bin order. The k-th largest
value is exact too (one more pass reads the values of the bucket that holds it).
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

    def rank(self, x: np.ndarray, start: int = 0) -> np.ndarray:
        """Mid-ranks of values ``x`` (all in the table; ``start`` is not used)."""
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
        picked = values[first :: self.stride].copy()  # not a view: it would keep the block
        self._kept.append(picked)
        self._n += picked.size
        while self._n > self.size:
            kept = np.concatenate(self._kept)[::2].copy()
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


#: Records of a column's values (and then of their ranks) on disk, by position.
_RECORD = np.dtype([("pos", "<i8"), ("value", "<f8")])


class SpilledRanks(Buckets):
    """Exact mid-ranks of a column past the cap, through files in ``folder``.

    :meth:`add` (a pass in bin order) counts the buckets and writes the values of buckets that
    are not a single value, with their positions, to one file per group of buckets (about
    ``cap`` values each, by the sample); :meth:`finish` ranks a group at a time (sorted in
    memory: the rank is the values below its bucket, the bucket's values below it in the group,
    and half its ties) and writes the ranks to one file per block of positions; :meth:`rank`
    reads them back in bin order. Disk: 32 bytes per such value; memory: a group and a block.
    """

    def __init__(self, sample: np.ndarray, n: int, folder, cap: int, block: int = 1 << 21):
        from pathlib import Path

        super().__init__(sample)
        below = np.searchsorted(sample, self.edges, side="left")  # sample values below each edge
        per = max(1, int(cap * sample.size / max(n, 1)))  # sample values per group
        self.group = np.r_[below, sample.size] // per  # of the open bucket below each edge
        self.folder, self.block = Path(folder), int(block)
        self.folder.mkdir(parents=True)
        self._files: dict[str, object] = {}
        self._n = 0
        self._cached: tuple[int, np.ndarray] | None = None

    def _write(self, name: str, records: np.ndarray) -> None:
        if name not in self._files:
            self._files[name] = open(self.folder / name, "ab")  # noqa: SIM115 (closed in _close)
        records.tofile(self._files[name])

    def _close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def _scatter(self, prefix: str, keys: np.ndarray, records: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        keys, records = keys[order], records[order]
        cuts = np.r_[0, np.flatnonzero(np.diff(keys)) + 1, keys.size]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            self._write(f"{prefix}{keys[a]}", records[a:b])

    def add(self, x: np.ndarray) -> None:
        codes = self.codes(x)
        self.counts += np.bincount(codes, minlength=self.counts.size)
        spread = np.flatnonzero(codes % 2 == 0)
        if spread.size:
            records = np.empty(spread.size, _RECORD)
            records["pos"], records["value"] = self._n + spread, x[spread]
            self._scatter("g", self.group[codes[spread] // 2], records)
        self._n += x.size

    def finish(self) -> SpilledRanks:
        self._close()
        below = np.cumsum(self.counts) - self.counts  # values in lower buckets
        for path in sorted(self.folder.glob("g*")):
            records = np.fromfile(path, _RECORD)
            path.unlink()
            records = records[np.argsort(records["value"], kind="stable")]
            values, index = records["value"], np.arange(records.size)
            codes = self.codes(values)
            first_of_code = np.maximum.accumulate(np.where(np.r_[True, codes[1:] != codes[:-1]],
                                                           index, 0))  # fmt: skip
            new = np.r_[True, values[1:] != values[:-1]]
            first_of_value = np.maximum.accumulate(np.where(new, index, 0))
            starts = np.flatnonzero(new)
            ties = np.diff(np.r_[starts, values.size])[np.cumsum(new) - 1]
            records["value"] = (below[codes] + (first_of_value - first_of_code)
                                + (ties + 1) / 2.0)  # fmt: skip
            self._scatter("r", records["pos"] // self.block, records)
        self._close()
        return self

    def _ranks_of_block(self, b: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != b:
            dense = np.full(self.block, np.nan)
            path = self.folder / f"r{b}"
            if path.exists():
                records = np.fromfile(path, _RECORD)
                dense[records["pos"] - b * self.block] = records["value"]
            self._cached = (b, dense)
        return self._cached[1]

    def rank(self, x: np.ndarray, start: int = 0) -> np.ndarray:
        """Mid-ranks of ``x``, the column's values at positions ``start, start + 1, ...``."""
        ranks = super().rank(x)
        spread = np.flatnonzero(self.codes(x) % 2 == 0)
        pos = start + spread
        for b in np.unique(pos // self.block):
            here = pos // self.block == b
            ranks[spread[here]] = self._ranks_of_block(int(b))[pos[here] - b * self.block]
        return ranks
