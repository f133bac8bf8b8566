"""Minibatches of consecutive bins for training.

The enrichment chain and the windowed covariates read neighbouring bins, so a minibatch is a
run of consecutive bins (genome order) rather than a random set. Each epoch the
run boundaries move by a random offset and the runs are visited in random order.

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


class ContiguousBlockSampler(Sampler):
    """Yield index arrays of ``block_size`` consecutive positions.

    Parameters
    ----------
    n
        Number of positions.
    block_size
        Positions per block (the minibatch size).
    shuffle
        Random offset and random block order each epoch; runs shorter than a quarter block at
        the two ends are skipped for that epoch (the offset changes, so every bin is visited).
        When ``block_size`` covers all positions there is one block, the same every epoch.
    """

    def __init__(self, n: int, block_size: int, shuffle: bool) -> None:
        self.n = int(n)
        self.block_size = max(1, min(int(block_size), self.n))
        self.shuffle = shuffle

    def _blocks(self) -> list[np.ndarray]:
        b = self.block_size
        if b >= self.n:
            # Everything fits in one minibatch: the whole chain, exact, every epoch (a random
            # cut would only add noise and skip a short end run).
            return [np.arange(self.n)]
        if not self.shuffle:
            return [np.arange(s, min(s + b, self.n)) for s in range(0, self.n, b)]
        offset = int(torch.randint(0, b, ()).item())
        starts = [0] + list(range(offset, self.n, b)) if offset else list(range(0, self.n, b))
        blocks = []
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else self.n
            if e - s >= max(1, b // 4) or len(starts) == 1:
                blocks.append(np.arange(s, e))
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


class ContiguousBlockLoader(AnnDataLoader):
    """:class:`~scvi.dataloaders.AnnDataLoader` whose batches are runs of consecutive bins."""

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
        indices = np.arange(n_obs) if indices is None else np.sort(np.asarray(indices))
        self.indices = indices
        self.dataset = adata_manager.create_torch_dataset(
            indices=indices, data_and_attributes=data_and_attributes
        )
        sampler = ContiguousBlockSampler(len(indices), batch_size, shuffle)
        # Bypass AnnDataLoader.__init__: its sampler argument keeps automatic batching on.
        DataLoader.__init__(self, self.dataset, sampler=sampler, batch_size=None, num_workers=0)


class ContiguousDataSplitter(DataSplitter):
    """:class:`~scvi.dataloaders.DataSplitter` with contiguous training/validation runs."""

    data_loader_cls = ContiguousBlockLoader

    def __init__(self, adata_manager, *args, **kwargs) -> None:
        kwargs["shuffle_set_split"] = False
        super().__init__(adata_manager, *args, **kwargs)


class _RowRanges(Dataset):
    """Maps a block of positions to its row range ``(start, stop)`` (rows ``indices``)."""

    def __init__(self, indices: np.ndarray) -> None:
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, block: np.ndarray) -> tuple[int, int]:
        return int(self.indices[block[0]]), int(self.indices[block[-1]]) + 1


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
        indices = np.arange(source.n_obs) if indices is None else np.sort(np.asarray(indices))
        if len(indices) and indices[-1] - indices[0] + 1 != len(indices):
            raise ValueError("a store loader reads one contiguous range of rows")
        self.indices = indices
        self.source = source
        self.prefetch = max(0, int(prefetch))
        sampler = ContiguousBlockSampler(len(indices), batch_size, shuffle)
        DataLoader.__init__(
            self, _RowRanges(indices), sampler=sampler, batch_size=None, num_workers=0
        )

    def __iter__(self):
        # DataLoader draws its seed when the iterator is made (here, not at the first batch),
        # and the sampler its offset and order at the first batch: as in memory.
        return self._read_ahead(super().__iter__())

    def _read_ahead(self, ranges):
        pending: deque = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="chipvi-read") as pool:
            try:
                for start, stop in ranges:
                    pending.append(pool.submit(self.source.batch, start, stop))
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
