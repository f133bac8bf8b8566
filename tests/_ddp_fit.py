"""Run as a script by test_model_ddp.py: fit one ChIPVI in one process and with Lightning's
DDP on two CPU processes, and save what the test compares (rank 0 only).

Lightning's ``ddp`` strategy starts rank 1 by running this script again (``sys.argv``) with
``LOCAL_RANK=1``: that process skips the single-process fit and joins the DDP one.

With ``--store`` the bins are a bins store (written next to OUT by rank 0 before either fit)
and each process counts the rows it reads from it.

Usage: ``python tests/_ddp_fit.py OUT.npz [--store]``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


#: Where rank 1 of the DDP fit saves its parameters (set by main from the output path).
_RANK1 = ""


#: The bins store of ``--store`` (set by main from the output path), else "".
_STORE = ""
#: Rows read from the store by this process in its last fit.
_ROWS_READ = [0]


def _write_store(adata, path: str) -> None:
    from chipvi.io import store_writer

    with store_writer(path, chunk=256, overwrite=True) as writer:
        layers = {k: adata.layers[k] for k in ("control", "mapq", "control_mapq")}
        writer.append(adata.obs, adata.X, layers)
        writer.finish(adata.var, dict(adata.uns))


def _count_reads() -> None:
    from chipvi.model import _store_data

    batch = _store_data.StoreSource.batch

    def counted(self, start, stop, window):
        _ROWS_READ[0] += int(window[2] - window[1])  # the rows the minibatch scores
        return batch(self, start, stop, window)

    _store_data.StoreSource.batch = counted


def fit(**kwargs) -> dict:
    import scvi

    from _chipvi_synthetic import make_chip_adata
    from chipvi import ChIPVI
    from chipvi.io import open_store

    rank0 = os.environ.get("LOCAL_RANK", "0") == "0"
    adata, _ = make_chip_adata(n_bins=2000, seed=3)
    scvi.settings.seed = 0
    if _STORE:
        if rank0 and not kwargs:  # before the DDP fit starts rank 1
            _write_store(adata, _STORE)
        data = open_store(_STORE)
    else:
        ChIPVI.setup_anndata(adata)
        data = adata
    model = ChIPVI(data)
    _ROWS_READ[0] = 0
    # One process takes runs of 500 bins; each of the two DDP processes one of 250 per step
    # (its share): the same bins per step and the same number of steps.
    batch_size = 250 if kwargs else 500
    model.train(
        max_epochs=40, batch_size=batch_size, accelerator="cpu", enable_progress_bar=False,
        **kwargs,
    )  # fmt: skip
    params = {k: v.detach().cpu().numpy() for k, v in model.module.state_dict().items()}
    rows = np.array(_ROWS_READ[0])
    if not rank0:
        # Rank 1's parameters after training: the test checks DDP kept both ranks equal.
        np.savez(_RANK1, rows_read=rows, **params)
        return {}
    if _STORE:
        model.add_posterior()
        store = open_store(_STORE)
        lfe = store.array("chipvi_lfe", 0, store.n_obs)
    else:
        lfe = model.get_denoised(return_numpy=True)
    return {
        "params": params,
        "rows_read": rows,
        "lfe": lfe,
        "gains": model.gains.to_numpy(),
        "stay": model.stay_probabilities,
        "elbo": model.history["elbo_train"].to_numpy().ravel(),
        "world": np.array(model.trainer.world_size if getattr(model, "trainer", None) else 0),
    }


def main(out: str, store: bool = False) -> None:
    global _RANK1, _STORE
    _RANK1 = out.removesuffix(".npz") + ".rank1.npz"
    if store:
        _STORE = out.removesuffix(".npz") + ".zarr"
        _count_reads()
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0"
    single = fit() if rank0 else {}
    ddp = fit(devices=2, strategy="ddp")
    if rank0:
        flat = {}
        for name, result in (("single", single), ("ddp", ddp)):
            for key, value in result.items():
                if key == "params":
                    flat.update({f"{name}_param_{k}": v for k, v in value.items()})
                else:
                    flat[f"{name}_{key}"] = np.asarray(value, dtype=float)
        np.savez(out, **flat)


if __name__ == "__main__":
    main(sys.argv[1], store="--store" in sys.argv[2:])
