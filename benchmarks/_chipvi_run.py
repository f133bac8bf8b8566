"""How the benchmarks run chipvi: ``ChIPVI`` with defaults, as a new user would."""

from __future__ import annotations

import logging
import time
import warnings


def quiet() -> None:
    """Silence Lightning's and scvi-tools' progress chatter in benchmark output."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train_default(adata, seed: int, max_epochs: int | None = None):
    """``ChIPVI(adata)`` trained with defaults (``max_epochs`` None: the model's own).

    Returns the model and the training wall time in seconds.
    """
    import scvi

    import chipvi

    scvi.settings.seed = seed
    chipvi.ChIPVI.setup_anndata(adata)
    model = chipvi.ChIPVI(adata)
    t0 = time.perf_counter()
    model.train(enable_progress_bar=False, max_epochs=max_epochs)
    return model, time.perf_counter() - t0
