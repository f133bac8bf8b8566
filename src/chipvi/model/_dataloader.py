"""Minibatches of consecutive bins for training.

The enrichment chain and the windowed covariates read neighbouring bins, so a minibatch is a
run of consecutive bins (genome order) rather than a random set. Each epoch the
run boundaries move by a random offset and the runs are visited in random order.
"""

from __future__ import annotations

import numpy as np
import torch
from scvi.dataloaders import AnnDataLoader, DataSplitter
from torch.utils.data import DataLoader, Sampler


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
        yield from self._blocks()

    def __len__(self) -> int:
        # With a random offset an epoch has at most one block more than without; Lightning
        # stops an epoch at len() batches, so report the upper bound (an epoch that ends
        # earlier simply exhausts the iterator).
        n_blocks = int(np.ceil(self.n / self.block_size))
        return n_blocks + 1 if self.shuffle and n_blocks > 1 else n_blocks


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
