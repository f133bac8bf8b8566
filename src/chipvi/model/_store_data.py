"""The model's data from a bins store: the four arrays read in row ranges, checked by chunk.

A :class:`~chipvi.io.BinStore` written by ``read_bams(..., out=...)`` has the layout that
:meth:`ChIPVI.setup_anndata` registers with its defaults (counts in ``X``, layers
``control``, ``mapq``, ``control_mapq``; ``var`` columns ``group``, ``depth``,
``control_depth``). Nothing here holds more than a chunk of bins.
"""

from __future__ import annotations

import numpy as np
import torch

from ..io import BinStore
from ..module import WINDOW_KEY
from ._validate import check_arrays, check_reads, read_library_table

#: Setup arguments of a store: the names ``read_bams`` writes (``setup_anndata``'s defaults).
STORE_KEYS = {
    "layer": None,
    "control_layer": "control",
    "mapq_layer": "mapq",
    "control_mapq_layer": "control_mapq",
    "group_key": "group",
    "depth_key": "depth",
    "control_depth_key": "control_depth",
}
#: Layers a store needs.
STORE_LAYERS = ("control", "mapq", "control_mapq")
_ARRAYS = ("X", "control", "mapq", "control_mapq")


def sample_ranges(n: int, chunk: int = 8192, n_max: int = 200_000) -> list[tuple[int, int]]:
    """Row ranges of about ``n_max`` bins spread over ``n`` (all of them when ``n <= n_max``):
    runs of ``chunk`` bins, every ``step``-th."""
    step = max(1, int(np.ceil(n / n_max)))
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk * step)]


class StoreSource:
    """Rows of a store's four data arrays for the model.

    Parameters
    ----------
    store
        An open store (its layers were checked on open).
    check
        Check every chunk as :func:`read_arrays` checks an AnnData, and total each library's
        reads (``totals``).
    """

    def __init__(self, store: BinStore, check: bool = True) -> None:
        self.store = store
        keys = STORE_KEYS
        self.arrays = {
            "X": store.rows(keys["layer"]),
            "control": store.rows(keys["control_layer"]),
            "mapq": store.rows(keys["mapq_layer"]),
            "control_mapq": store.rows(keys["control_mapq_layer"]),
        }
        self.table = read_library_table(store, keys)
        self.totals = None
        if check:
            totals = np.zeros(store.n_vars)
            for a in range(0, store.n_obs, store.chunk):
                block = self.read(a, min(a + store.chunk, store.n_obs))
                check_arrays(block, keys, a)
                totals += block["X"].sum(0, dtype=np.float64)
            check_reads(totals, store.var.index, keys)
            self.totals = totals

    @property
    def n_obs(self) -> int:
        return self.store.n_obs

    @property
    def adata(self) -> StoreSource:
        """scvi-tools' ``DataSplitter`` reads ``adata_manager.adata.n_obs``."""
        return self

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` of the four arrays."""
        return {k: np.asarray(self.arrays[k][start:stop]) for k in _ARRAYS}

    def sample(self) -> dict[str, np.ndarray]:
        """The rows of :func:`sample_ranges`, concatenated."""
        parts = [self.read(a, b) for a, b in sample_ranges(self.n_obs)]
        return {k: np.concatenate([p[k] for p in parts]) for k in _ARRAYS}

    def batch(self, start: int, stop: int, window: np.ndarray) -> dict[str, torch.Tensor]:
        """A training minibatch: the rows as float32 tensors, ``run_start`` flags and its
        ``window`` (:func:`~chipvi.model._dataloader.block_rows`)."""
        out = {
            k: torch.as_tensor(v, dtype=torch.float32) for k, v in self.read(start, stop).items()
        }
        flags = self.store.run_starts(start, stop).astype(np.float32)[:, None]
        out["run_start"] = torch.as_tensor(flags)
        out[WINDOW_KEY] = torch.as_tensor(window)
        return out
