"""Minibatches of consecutive bins for training.

The enrichment chain and the windowed covariates read neighbouring bins, so a minibatch is a
run of consecutive bins (genome order) rather than a random set. Each epoch the
run boundaries move by a random offset and the runs are visited in random order; the runs
of an epoch tile the bins.

A minibatch holds its run's rows and the rows around it that make its objective exact
(:func:`block_rows`): ``OVERLAP`` rows before it that condition the chain at its first bin,
and ``CONTEXT`` rows of covariate window on both sides; ``batch["window"]`` says which rows
are scored. The sum over an epoch's minibatches is then the whole-data objective, whatever
the batch size.

From a bins store the same runs are read from disk (each a contiguous row range, so whole
chunks in random chunk order), a few runs ahead in a thread while the model computes.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scvi.dataloaders import AnnDataLoader, DataSplitter
from torch.utils.data import DataLoader, Dataset, Sampler

from ..module import CONTEXT, OVERLAP, WINDOW_KEY


def block_rows(a: int, b: int, first: int, n: int) -> tuple[int, int, np.ndarray]:
    """Rows ``[lo, hi)`` to read for the minibatch scoring rows ``[a, b)`` of ``n`` rows, and
    its window ``(p, a, b)`` relative to ``lo``.

    The chain's context ``[p, a)`` stays inside the rows the loader visits (from ``first``):
    its objective is the log-likelihood of those rows as one chain (broken at chromosome
    starts and gaps). Covariate context is read from every row, as the posterior pass does.
    """
    p = max(first, a - OVERLAP)
    lo, hi = max(0, p - CONTEXT), min(n, b + CONTEXT)
    return lo, hi, np.array([p - lo, a - lo, b - lo], dtype=np.int64)


def _contiguous(indices, n: int) -> range:
    """``indices`` (all ``n`` rows when None) as the one range of rows they must form.

    Ranges, not index arrays: an array of a genome's rows is 8 bytes a bin (1 GiB at 124 M
    bins), and the loaders need only its ends.
    """
    if indices is None:
        return range(n)
    if isinstance(indices, range) and indices.step == 1:
        return indices
    indices = np.asarray(indices)
    if not len(indices):
        return range(0)
    first, last = int(indices.min()), int(indices.max())
    if last - first + 1 != len(indices):
        raise ValueError("a contiguous-block loader reads one contiguous range of rows")
    return range(first, last + 1)


class ContiguousBlockSampler(Sampler):
    """Yield ranges of ``block_size`` consecutive positions.

    Parameters
    ----------
    n
        Number of positions.
    block_size
        Positions per block (the minibatch size).
    shuffle
        Random offset and random block order each epoch; a run shorter than a quarter block at
        either end joins its neighbour (blocks of up to 1.25 ``block_size``), so the blocks of
        an epoch tile the positions. When ``block_size`` covers all positions there is one
        block, the same every epoch.
    """

    def __init__(self, n: int, block_size: int, shuffle: bool) -> None:
        self.n = int(n)
        self.block_size = max(1, min(int(block_size), self.n))
        self.shuffle = shuffle

    def _blocks(self) -> list[range]:
        # Ranges, not arrays of positions: an epoch's blocks cover every bin of the genome.
        b = self.block_size
        if b >= self.n:
            # Everything fits in one minibatch: the whole chain, every epoch.
            return [range(self.n)]
        if not self.shuffle:
            return [range(s, min(s + b, self.n)) for s in range(0, self.n, b)]
        offset = int(torch.randint(0, b, ()).item())
        bounds = sorted({0, *range(offset, self.n, b), self.n})
        # A short run at either end joins its neighbour: every bin is visited once per epoch,
        # and no minibatch is so short that its scaled-up gradient is mostly noise.
        short = max(1, b // 4)
        if len(bounds) > 2 and bounds[1] - bounds[0] < short:
            del bounds[1]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < short:
            del bounds[-2]
        blocks = [range(s, e) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
        order = torch.randperm(len(blocks)).tolist()
        return [blocks[i] for i in order]

    def __iter__(self):
        blocks = self._blocks()
        rank, world = _rank_and_world()
        if world == 1:
            yield from blocks
            return
        # Under DDP (Lightning's `strategy="ddp"`) every rank draws the same blocks (the same
        # seed) and visits its share; ranks with one block fewer repeat one, since every rank
        # must take the same number of steps.
        share, steps = blocks[rank::world] or blocks[:1], -(-len(blocks) // world)
        yield from share + share[: steps - len(share)]

    def __len__(self) -> int:
        # With a random offset an epoch has at most one block more than without; Lightning
        # stops an epoch at len() batches, so report the upper bound (an epoch that ends
        # earlier simply exhausts the iterator).
        n_blocks = int(np.ceil(self.n / self.block_size))
        n_blocks = n_blocks + 1 if self.shuffle and n_blocks > 1 else n_blocks
        return -(-n_blocks // _rank_and_world()[1])


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes training together (1 without DDP)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _RowRanges(Dataset):
    """Maps a block of positions to its minibatch's :func:`block_rows` (rows ``indices`` of
    ``n``)."""

    def __init__(self, indices: range, n: int) -> None:
        self.indices, self.n = indices, n

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, block: range) -> tuple[int, int, np.ndarray]:
        a, b = int(self.indices[block[0]]), int(self.indices[block[-1]]) + 1
        return block_rows(a, b, int(self.indices[0]), self.n)


class _Blocks(_RowRanges):
    """Maps a block of positions (of ``indices``) to its minibatch: rows and window."""

    def __init__(self, rows: Dataset, indices: range, n: int) -> None:
        super().__init__(indices, n)
        self.rows = rows

    def __getitem__(self, block: range) -> dict:
        lo, hi, window = super().__getitem__(block)
        out = dict(self.rows[np.arange(lo, hi)])
        out[WINDOW_KEY] = window
        return out


class ContiguousBlockLoader(AnnDataLoader):
    """:class:`~scvi.dataloaders.AnnDataLoader` whose batches are runs of consecutive bins,
    each with the rows around it (:func:`block_rows`); ``indices``: one contiguous range."""

    def __init__(
        self,
        adata_manager,
        indices=None,
        batch_size: int = 1024,
        shuffle: bool = False,
        data_and_attributes=None,
        **kwargs,
    ) -> None:
        n_obs = adata_manager.adata.n_obs
        self.indices = indices = _contiguous(indices, n_obs)
        # Every row: the context of a block may lie outside ``indices``.
        rows = adata_manager.create_torch_dataset(data_and_attributes=data_and_attributes)
        self.dataset = _Blocks(rows, indices, n_obs)
        sampler = ContiguousBlockSampler(len(indices), batch_size, shuffle)
        # Bypass AnnDataLoader.__init__: its sampler argument keeps automatic batching on.
        DataLoader.__init__(self, self.dataset, sampler=sampler, batch_size=None, num_workers=0)


class ContiguousDataSplitter(DataSplitter):
    """:class:`~scvi.dataloaders.DataSplitter` with contiguous training/validation runs."""

    data_loader_cls = ContiguousBlockLoader

    def __init__(self, adata_manager, *args, **kwargs) -> None:
        kwargs["shuffle_set_split"] = False
        super().__init__(adata_manager, *args, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        """scvi-tools' split without shuffling (validation rows first, then training, then
        test), as ranges rather than arrays of every row's index."""
        if self.external_indexing is not None:
            super().setup(stage)
            return
        n_val, n_train = self.n_val, self.n_train
        self.val_idx = range(n_val)
        self.train_idx = range(n_val, n_val + n_train)
        self.test_idx = range(n_val + n_train, self.adata_manager.adata.n_obs)


class StoreBlockLoader(DataLoader):
    """The minibatches of :class:`ContiguousBlockLoader` read from a bins store.

    The sampler and its random draws are those of the in-memory loader, so a seeded run
    visits the same runs of bins in the same order; each run is read ``prefetch`` runs
    ahead in a thread (zarr decompresses without the GIL).

    Parameters
    ----------
    source
        A :class:`~chipvi.model._store_data.StoreSource` (``batch(start, stop)``).
    indices
        Rows to visit: one contiguous range.
    """

    def __init__(
        self,
        source,
        indices=None,
        batch_size: int = 1024,
        shuffle: bool = False,
        prefetch: int = 2,
        **kwargs,
    ) -> None:
        self.indices = indices = _contiguous(indices, source.n_obs)
        self.source = source
        self.prefetch = max(0, int(prefetch))
        sampler = ContiguousBlockSampler(len(indices), batch_size, shuffle)
        DataLoader.__init__(
            self,
            _RowRanges(indices, source.n_obs),
            sampler=sampler,
            batch_size=None,
            num_workers=0,
        )

    def __iter__(self):
        # DataLoader draws its seed when the iterator is made (here, not at the first batch),
        # and the sampler its offset and order at the first batch: as in memory.
        return self._read_ahead(super().__iter__())

    def _read_ahead(self, ranges):
        pending: deque = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="chipvi-read") as pool:
            try:
                for start, stop, window in ranges:
                    pending.append(pool.submit(self.source.batch, start, stop, window))
                    if len(pending) > self.prefetch:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # an abandoned epoch (a one-batch warm-up) drops the reads ahead
                for future in pending:
                    future.cancel()


class StoreDataSplitter(ContiguousDataSplitter):
    """:class:`ContiguousDataSplitter` over a bins store (``source``, a
    :class:`~chipvi.model._store_data.StoreSource`, in place of the AnnData manager)."""

    data_loader_cls = StoreBlockLoader

    def __init__(self, adata_manager=None, *args, source=None, **kwargs) -> None:
        super().__init__(source, *args, **kwargs)
