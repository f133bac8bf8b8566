"""A tiny scvi-tools Pyro model with the ChIPVI contract, for CLI tests that must not depend on
the real model's size or speed (``model.model_class=_cli_fake_model:TinyChip``).

It is a real Pyro model trained by ``PyroSviTrainMixin`` (Lightning), so checkpoints, callbacks,
the Pyro optimiser state and resume are exercised exactly as with ChIPVI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass, PyroSviTrainMixin
from scvi.module.base import PyroBaseModuleClass
from torch.distributions import constraints


class _TinyPyro(PyroModule):
    def __init__(self, n_libraries: int, n_hidden: int):
        super().__init__()
        self.n_obs = None
        self.a = PyroParam(torch.zeros(n_libraries))
        self.b = PyroParam(torch.ones(n_libraries))
        self.enc = PyroModule[torch.nn.Linear](n_libraries, n_hidden)
        self.out = PyroModule[torch.nn.Linear](n_hidden, 1)
        self.log_scale = PyroParam(torch.tensor(-1.0))
        self.scale_pos = PyroParam(torch.tensor(0.5), constraint=constraints.positive)

    def forward(self, x, ctrl):
        with pyro.plate("bins", self.n_obs or x.shape[0], subsample_size=x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            rate = torch.exp(self.a + self.b * torch.log1p(ctrl) + z[:, None])
            pyro.sample("y", dist.Poisson(rate).to_event(1), obs=x)

    def guide(self, x, ctrl):
        with pyro.plate("bins", self.n_obs or x.shape[0], subsample_size=x.shape[0]):
            loc = self.out(torch.tanh(self.enc(torch.log1p(x)))).squeeze(-1)
            pyro.sample("z", dist.Normal(loc, torch.exp(self.log_scale) + 0 * self.scale_pos))


class _TinyModule(PyroBaseModuleClass):
    def __init__(self, n_libraries: int, n_hidden: int):
        super().__init__()
        self.core = _TinyPyro(n_libraries, n_hidden)

    @staticmethod
    def _get_fn_args_from_batch(tensor_dict):
        return (tensor_dict[REGISTRY_KEYS.X_KEY].float(), tensor_dict["control"].float()), {}

    @property
    def model(self):
        return self.core

    @property
    def guide(self):
        return self.core.guide


class TinyChip(PyroSviTrainMixin, BaseModelClass):
    """Contract-shaped stand-in for ChIPVI (technical/consistency args accepted and recorded)."""

    def __init__(
        self,
        adata,
        technical: str = "mu_r",
        consistency=("mse",),
        consistency_weight: float = 1.0,
        n_hidden: int = 8,
        **kwargs,
    ):
        pyro.clear_param_store()
        super().__init__(adata)
        self.module = _TinyModule(adata.n_vars, n_hidden)
        self.technical = technical
        self.consistency_weight = consistency_weight
        self.library_names = list(adata.var_names)
        self.group_names = list(dict.fromkeys(adata.var["group"].astype(str)))
        self._model_summary_string = f"TinyChip(technical={technical})"
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata, layer=None, control_layer="control", **kwargs):
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            LayerField("control", control_layer, is_count_data=True),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def train(
        self,
        max_epochs=None,
        accelerator="auto",
        devices="auto",
        strategy="auto",
        batch_size=64,
        lr=0.01,
        early_stopping=False,
        train_size=1.0,
        callbacks=None,
        **trainer_kwargs,
    ):
        if strategy != "auto":
            trainer_kwargs["strategy"] = strategy
        self.module.core.n_obs = self.adata.n_obs
        return super().train(
            max_epochs=max_epochs or 5,
            accelerator=accelerator,
            device=devices,
            train_size=train_size,
            batch_size=batch_size,
            lr=lr,
            early_stopping=early_stopping,
            callbacks=callbacks or [],
            **trainer_kwargs,
        )


def tiny_adata(n_bins: int = 300, seed: int = 0):
    """Contract-shaped AnnData: 2 groups x 2 replicates, with enriched bins."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    starts = np.arange(n_bins, dtype=np.int64) * 200
    obs = pd.DataFrame(
        {"chrom": pd.Categorical(["chrT"] * n_bins), "start": starts, "end": starts + 200}
    )
    obs.index = [f"chrT:{s}-{s + 200}" for s in starts]
    samples = ["A_R1", "A_R2", "B_R1", "B_R2"]
    var = pd.DataFrame(
        {
            "sample": samples,
            "target": "H3K4me3",
            "group": ["A", "A", "B", "B"],
            "replicate": [1, 2, 1, 2],
            "depth": 0,
            "control": "ctl",
            "control_depth": 0,
            "bam": "",
            "control_bam": "",
        },
        index=samples,
    )
    ctrl = rng.poisson(3.0, size=(n_bins, 4)).astype(np.int32)
    signal = np.where(rng.random(n_bins) < 0.1, 8.0, 1.0)
    x = rng.poisson(ctrl * signal[:, None] + 0.5).astype(np.int32)
    var["depth"] = x.sum(0)
    var["control_depth"] = ctrl.sum(0)
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.layers["control"] = ctrl
    adata.layers["mapq"] = np.full(x.shape, 30.0, dtype=np.float32)
    adata.layers["control_mapq"] = np.full(x.shape, 30.0, dtype=np.float32)
    adata.uns["chipvi"] = {"bin_size": 200, "chrom_sizes": {"chrT": int(n_bins * 200)}}
    return adata
