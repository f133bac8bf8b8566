"""The training plan keeps each step's objective as a value, not with its autograd graph."""

from __future__ import annotations

import numpy as np
from lightning.pytorch import Callback

from _chipvi_synthetic import make_chip_adata
from chipvi.model import ChIPVI


class _Records(Callback):
    """The per-step records of the plan, as they stand after each step."""

    def __init__(self):
        self.records = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.records.append(pl_module.training_step_outputs[-1]["loss"])


def test_step_records_hold_no_graph_and_average_to_the_epoch_objective():
    adata = make_chip_adata(n_bins=600, seed=3)[0]
    ChIPVI.setup_anndata(adata)
    model = ChIPVI(adata)
    probe = _Records()
    model.train(max_epochs=1, batch_size=150, enable_progress_bar=False, callbacks=[probe])
    assert len(probe.records) >= 4
    # A record with a graph would keep every step's graph alive until the epoch ends.
    assert all(r.grad_fn is None and not r.requires_grad for r in probe.records)
    mean = float(np.mean([float(r) for r in probe.records]))
    assert np.isclose(model.history["elbo_train"].to_numpy().ravel()[0], mean, rtol=1e-5)
