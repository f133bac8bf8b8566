"""Run as a script by test_model_ddp.py: fit one ChIPVI in one process and with Lightning's
DDP on two CPU processes, and save what the test compares (rank 0 only).

Lightning's ``ddp`` strategy starts rank 1 by running this script again (``sys.argv``) with
``LOCAL_RANK=1``: that process skips the single-process fit and joins the DDP one.

Usage: ``python tests/_ddp_fit.py OUT.npz``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


#: Where rank 1 of the DDP fit saves its parameters (set by main from the output path).
_RANK1 = ""


def fit(**kwargs) -> dict:
    import scvi

    from _chipvi_synthetic import make_chip_adata
    from chipvi import ChIPVI

    adata, _ = make_chip_adata(n_bins=2000, seed=3)
    scvi.settings.seed = 0
    ChIPVI.setup_anndata(adata)
    model = ChIPVI(adata)
    model.train(
        max_epochs=40, batch_size=250, accelerator="cpu", enable_progress_bar=False, **kwargs
    )
    params = {k: v.detach().cpu().numpy() for k, v in model.module.state_dict().items()}
    if os.environ.get("LOCAL_RANK", "0") != "0":
        # Rank 1's parameters after training: the test checks DDP kept both ranks equal.
        np.savez(_RANK1, **params)
        return {}
    return {
        "params": params,
        "lfe": model.get_denoised(return_numpy=True),
        "gains": model.gains.to_numpy(),
        "stay": model.stay_probabilities,
        "elbo": model.history["elbo_train"].to_numpy().ravel(),
        "world": np.array(model.trainer.world_size if getattr(model, "trainer", None) else 0),
    }


def main(out: str) -> None:
    global _RANK1
    _RANK1 = out.removesuffix(".npz") + ".rank1.npz"
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
    main(sys.argv[1])
