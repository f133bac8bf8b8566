"""ChIPVI: the user-facing model class (scvi-tools style)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import stats
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass, PyroSviTrainMixin
from scvi.train import LowLevelPyroTrainingPlan

from .._errors import ChipviInputError
from ..module import ChipviModule, list_consistency, list_covariate_sets, list_technical
from ..module._module import CONTEXT
from ..module._own_evidence import GRID as OWN_GRID
from ..module._own_evidence import own_evidence_posterior
from ._dataloader import ContiguousDataSplitter
from ._validate import read_arrays, read_library_table

logger = logging.getLogger(__name__)

_SETUP_KEYS = ("layer", "control_layer", "mapq_layer", "control_mapq_layer")
_LIBRARY_KEYS = ("group_key", "depth_key", "control_depth_key")
_SAVE_INFO = "chipvi_model.json"
_CHUNK = 8192

Kind = Literal[
    "log_fold_enrichment", "log_fold_enrichment_lower", "fold_enrichment", "sd", "biological_rate"
]

#: Posterior quantile reported by ``kind="log_fold_enrichment_lower"``.
LOWER_QUANTILE = 0.05

Level = Literal["library", "group"]
#: ``get_denoised`` also has each library's own-evidence posterior.
DenoisedLevel = Literal["library", "group", "library_own"]


def _version() -> str:
    from .. import __version__

    return __version__


def _obs_hash(obs_names: pd.Index) -> str:
    return hashlib.sha1("\n".join(map(str, obs_names)).encode()).hexdigest()


def default_batch_size(n_obs: int) -> int:
    """Bins per minibatch: long runs for context, at least ~8 steps per epoch on small data."""
    return int(np.clip(2 ** np.floor(np.log2(max(n_obs, 1) / 8)), 128, 2048))


def default_max_epochs(n_obs: int, batch_size: int, n_steps: int = 1500) -> int:
    """Epochs that give about ``n_steps`` optimiser steps (at least 2, at most 1000)."""
    steps_per_epoch = max(1, int(np.ceil(n_obs / batch_size)))
    return int(np.clip(round(n_steps / steps_per_epoch), 2, 1000))


class ChIPVI(PyroSviTrainMixin, BaseModelClass):
    """Denoised, replicate-consistent ChIP-seq enrichment with a Negative Binomial model.

    Each ChIP library's counts follow a Negative Binomial whose technical mean and dispersion are
    learned from covariates (matched control counts and MAPQ, ChIP MAPQ, depths); the biology is
    a sparse log fold enrichment per bin and **group**, shared by the group's replicates, plus a
    small deviation per library. An amortised guide reads a window of neighbouring bins.

    Parameters
    ----------
    adata
        AnnData (bins × ChIP libraries) registered with :meth:`setup_anndata`.
    technical
        Technical network: ``"mu_r"`` (dispersion from the mean and covariates) or ``"r_p"``.
    covariates
        Covariate set (see :func:`chipvi.module.list_covariate_sets`).
    consistency
        Replicate-consistency terms (``"mse"``, ``"pearson"``); ``()`` for none. Groups with a
        single library get none (with a warning).
    consistency_weight
        One weight per term, or one for all.
    n_hidden, n_layers
        Width and depth of the technical MLPs.
    n_encoder_hidden
        Channels of the guide's convolutional encoder.
    window
        Let the guide read neighbouring bins (``False``: each bin alone).
    random_walk_scale
        Optional random-walk smoothness prior on the group enrichment between adjacent bins.
    library_scale
        Prior sd of each library's deviation from its group's log fold enrichment.
    library_smoothness
        ``None``: the deviations are independent per bin. A value φ in (0, 1): they follow an
        AR(1) prior along the genome (correlation φ between neighbouring bins, marginal sd
        ``library_scale``), so a library's own evidence adds up over the bins of a feature
        and shows in its output. Measured with φ = 0.9 and ``library_scale=0.3``
        (``benchmarks/RESULTS.md``): higher AUPRC on the simulator, but narrow peaks are
        blurred (lower precision of region calls) and part of the shared signal moves from
        the group term into the deviations, so group-level outputs under-state it; hence
        off by default.
    low_mapq
        Bins whose reads (ChIP and control, ±2 bins) have a mean MAPQ below this are treated
        as multi-mapper pile-ups: their counts are explained by the technical model alone and
        their enrichment posterior stays at the prior (no evidence either way); ``None`` turns
        it off.

    Examples
    --------
    >>> adata = chipvi.read_bams("samples.csv")
    >>> chipvi.ChIPVI.setup_anndata(adata)
    >>> model = chipvi.ChIPVI(adata)
    >>> model.train()
    >>> adata.layers["chipvi_lfe"] = model.get_denoised(return_numpy=True)
    """

    _module_cls = ChipviModule
    _data_splitter_cls = ContiguousDataSplitter
    _training_plan_cls = LowLevelPyroTrainingPlan

    def __init__(
        self,
        adata: AnnData,
        technical: str = "mu_r",
        covariates: str = "default",
        consistency: Sequence[str] = ("mse", "pearson"),
        consistency_weight: float | Sequence[float] = 1.0,
        n_hidden: int = 32,
        n_layers: int = 2,
        n_encoder_hidden: int = 32,
        window: bool = True,
        random_walk_scale: float | None = None,
        library_scale: float = 0.2,
        library_smoothness: float | None = None,
        low_mapq: float | None = 10.0,
    ) -> None:
        if not isinstance(adata, AnnData):
            raise ChipviInputError(f"ChIPVI needs an AnnData, got {type(adata).__name__}.")
        if self._get_most_recent_anndata_manager(adata) is None:
            raise ChipviInputError(
                "This AnnData was not registered: call chipvi.ChIPVI.setup_anndata(adata) first."
            )
        for name, value, allowed in (
            ("technical", technical, list_technical()),
            ("covariates", covariates, list_covariate_sets()),
        ):
            if value not in allowed:
                raise ChipviInputError(f"{name}={value!r} is not one of {allowed}.")
        consistency = (consistency,) if isinstance(consistency, str) else tuple(consistency)
        bad = [c for c in consistency if c not in list_consistency()]
        if bad:
            raise ChipviInputError(f"consistency terms {bad} unknown; use {list_consistency()}.")
        if library_smoothness is not None and not 0 < library_smoothness < 1:
            raise ChipviInputError(
                f"library_smoothness must lie in (0, 1) or be None, got {library_smoothness!r}."
            )
        if isinstance(consistency_weight, int | float):
            consistency_weight = [float(consistency_weight)] * len(consistency)
        consistency_weight = [float(w) for w in consistency_weight]
        if len(consistency_weight) != len(consistency):
            raise ChipviInputError("consistency_weight needs one weight per consistency term.")
        super().__init__(adata)

        keys = self._setup_keys
        arrays = read_arrays(adata, keys)
        table = read_library_table(adata, keys)
        self.group_names = list(pd.unique(table["group"]))
        group_index = np.array([self.group_names.index(g) for g in table["group"]])
        singles = [g for g in self.group_names if (table["group"] == g).sum() == 1]
        if singles and consistency:
            warnings.warn(
                f"Groups {singles} have a single library: replicate consistency is off for them.",
                UserWarning,
                stacklevel=2,
            )
        counts = arrays["X"]
        has_reads = counts > 0
        typical_mapq = np.array(
            [
                np.median(arrays["mapq"][has_reads[:, j], j]) if has_reads[:, j].any() else 30.0
                for j in range(counts.shape[1])
            ]
        )
        has_ctrl = arrays["control"] > 0
        typical_cmapq = np.array(
            [
                np.median(arrays["control_mapq"][has_ctrl[:, j], j])
                if has_ctrl[:, j].any()
                else 30.0
                for j in range(counts.shape[1])
            ]
        )
        log_mean = np.log(counts.mean(0) + 1e-3)

        self.module = self._module_cls(
            n_obs=adata.n_obs,
            group_index=torch.as_tensor(group_index),
            depth=torch.as_tensor(table["depth"], dtype=torch.float32),
            control_depth=torch.as_tensor(table["control_depth"], dtype=torch.float32),
            typical_mapq=torch.as_tensor(typical_mapq, dtype=torch.float32),
            typical_control_mapq=torch.as_tensor(typical_cmapq, dtype=torch.float32),
            log_mean=torch.as_tensor(log_mean, dtype=torch.float32),
            technical=technical,
            covariates=covariates,
            consistency=consistency,
            consistency_weight=consistency_weight,
            n_hidden=n_hidden,
            n_layers=n_layers,
            n_encoder_hidden=n_encoder_hidden,
            window=window,
            random_walk_scale=random_walk_scale,
            library_scale=library_scale,
            library_smoothness=library_smoothness,
            low_mapq=low_mapq,
        )
        self._set_covariate_statistics(arrays)
        self._model_summary_string = (
            f"ChIPVI: {adata.n_obs} bins × {adata.n_vars} libraries in {len(self.group_names)} "
            f"groups; technical={technical!r}, covariates={covariates!r}, "
            f"consistency={dict(zip(consistency, consistency_weight, strict=True))}, "
            f"window={window}, random_walk_scale={random_walk_scale}, "
            f"library_scale={library_scale}, library_smoothness={library_smoothness}, "
            f"low_mapq={low_mapq}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ----------------------------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        layer: str | None = None,
        control_layer: str = "control",
        mapq_layer: str = "mapq",
        control_mapq_layer: str = "control_mapq",
        group_key: str = "group",
        depth_key: str = "depth",
        control_depth_key: str = "control_depth",
        **kwargs,
    ) -> None:
        """Register an AnnData (bins × ChIP libraries, as from :func:`chipvi.read_bams`).

        Checks every input first (nothing is registered when one is bad).

        Parameters
        ----------
        adata
            Bins × libraries.
        layer
            Layer with the ChIP counts (``None``: ``adata.X``).
        control_layer, mapq_layer, control_mapq_layer
            Layers with the matched control counts, mean ChIP MAPQ and mean control MAPQ.
        group_key
            ``adata.var`` column with the biological group (replicates share a group).
        depth_key, control_depth_key
            ``adata.var`` columns with the read totals of each library and its control.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        keys = {
            "layer": layer,
            "control_layer": control_layer,
            "mapq_layer": mapq_layer,
            "control_mapq_layer": control_mapq_layer,
            "group_key": group_key,
            "depth_key": depth_key,
            "control_depth_key": control_depth_key,
        }
        if not isinstance(adata, AnnData):
            raise ChipviInputError(f"setup_anndata needs an AnnData, got {type(adata).__name__}.")
        read_arrays(adata, keys)
        read_library_table(adata, keys)
        fields = [
            LayerField("X", layer, is_count_data=True),
            LayerField("control", control_layer, is_count_data=True),
            LayerField("mapq", mapq_layer, is_count_data=False),
            LayerField("control_mapq", control_mapq_layer, is_count_data=False),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @property
    def _setup_keys(self) -> dict:
        args = self.adata_manager.registry["setup_args"]
        return {k: args[k] for k in _SETUP_KEYS + _LIBRARY_KEYS}

    @property
    def library_names(self) -> list[str]:
        """Names of the ChIP libraries (``adata.var_names``)."""
        return list(self.adata.var_names)

    def __repr__(self) -> str:
        state = "trained" if self.is_trained_ else "not trained"
        return f"{self._model_summary_string} ({state})"

    # ----------------------------------------------------------------------------------------
    def _set_covariate_statistics(self, arrays: dict[str, np.ndarray]) -> None:
        """z-score statistics of the covariates from (up to ~200k bins of) the training data."""
        n = arrays["X"].shape[0]
        step = max(1, int(np.ceil(n / 200_000)))
        raws = []
        for start in range(0, n, _CHUNK * step):
            chunk = {
                k: torch.as_tensor(v[start : start + _CHUNK], dtype=torch.float32)
                for k, v in arrays.items()
            }
            raws.append(
                self.module.covariates.raw(
                    chunk["X"], chunk["control"], chunk["mapq"], chunk["control_mapq"]
                )
            )
        self.module.covariates.set_statistics(torch.cat(raws, 0))

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        strategy: str = "auto",
        batch_size: int | None = None,
        lr: float = 5e-3,
        early_stopping: bool = False,
        train_size: float = 1.0,
        callbacks: list | None = None,
        warmup_fraction: float = 0.2,
        **trainer_kwargs,
    ):
        """Fit the model by stochastic variational inference (Lightning's arguments).

        Parameters
        ----------
        max_epochs
            Passes over the bins; default gives about 1500 optimiser steps (2–1000 epochs).
        accelerator, devices, strategy
            As in :class:`lightning.pytorch.Trainer` (``"gpu"`` needs a CUDA device).
        batch_size
            Consecutive bins per minibatch; default from ``n_obs`` (128–2048).
        lr
            Learning rate of Adam (gradients clipped at norm 10).
        early_stopping
            Stop when the training ELBO stops improving (Lightning's ``EarlyStopping``).
        train_size
            Fraction of bins used for fitting (a contiguous leading run of the genome); the
            rest are held out. Their posteriors still come from the amortised guide.
        callbacks
            Lightning callbacks.
        warmup_fraction
            Fraction of the epochs over which the biological term is ramped in (the technical
            network first learns what the covariates explain).
        **trainer_kwargs
            Passed to the Lightning trainer.
        """
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ChipviInputError(
                "accelerator='gpu' was requested but no CUDA GPU is available to torch; "
                "use accelerator='cpu' or 'auto'."
            )
        if not 0 < train_size <= 1:
            raise ChipviInputError(f"train_size must be in (0, 1], got {train_size}.")
        n_obs = self.adata.n_obs
        batch_size = default_batch_size(n_obs) if batch_size is None else int(batch_size)
        n_train = max(1, int(round(n_obs * train_size)))
        if max_epochs is None:
            max_epochs = default_max_epochs(n_train, batch_size)
        self.module.n_obs = n_train
        training_plan = LowLevelPyroTrainingPlan(
            self.module,
            optim=torch.optim.Adam,
            optim_kwargs={"lr": lr},
            n_epochs_kl_warmup=max(1, int(round(warmup_fraction * max_epochs))),
        )
        trainer_kwargs.setdefault("gradient_clip_val", 10.0)
        trainer_kwargs["callbacks"] = list(callbacks or [])
        trainer_kwargs.setdefault("strategy", strategy)
        # The Pyro training plan logs only the training ELBO (no validation step).
        trainer_kwargs.setdefault("early_stopping_monitor", "elbo_train")
        self.module.train()
        try:
            super().train(
                max_epochs=max_epochs,
                accelerator=accelerator,
                device=devices,
                train_size=train_size,
                validation_size=1 - train_size if train_size < 1 else None,
                batch_size=batch_size,
                early_stopping=early_stopping,
                training_plan=training_plan,
                **trainer_kwargs,
            )
        finally:
            self.module._cache = None
            self.module.eval()

    # ----------------------------------------------------------------------------------------
    def _check_adata(self, adata: AnnData | None) -> AnnData:
        if adata is None:
            return self.adata
        if not isinstance(adata, AnnData):
            raise ChipviInputError(f"Expected an AnnData, got {type(adata).__name__}.")
        if list(adata.var_names) != self.library_names:
            raise ChipviInputError(
                f"This AnnData has libraries {list(adata.var_names)}, the model was trained on "
                f"{self.library_names}; use the same libraries in the same order."
            )
        if adata.n_obs != self.adata.n_obs or not adata.obs_names.equals(self.adata.obs_names):
            raise ChipviInputError(
                f"This AnnData has other bins ({adata.n_obs}) than the model was trained on "
                f"({self.adata.n_obs}); train a model on it instead."
            )
        return adata

    def _predict_all(self, adata: AnnData | None, batch_size: int | None) -> dict[str, np.ndarray]:
        """Deterministic guide outputs for every bin, in chunks with genomic context."""
        adata = self._check_adata(adata)
        arrays = read_arrays(adata, self._setup_keys)
        chunk = _CHUNK if batch_size is None else max(int(batch_size), 1)
        n = adata.n_obs
        device = next(self.module.parameters()).device
        self.module.eval()
        pieces: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            lo, hi = max(0, start - CONTEXT), min(n, stop + CONTEXT)
            tensors = [
                torch.as_tensor(arrays[k][lo:hi], dtype=torch.float32, device=device)
                for k in ("X", "control", "mapq", "control_mapq")
            ]
            out = self.module.predict(*tensors)
            for key, value in out.items():
                pieces.setdefault(key, []).append(value[start - lo : stop - lo].cpu().numpy())
        result = {k: np.concatenate(v, 0) for k, v in pieces.items()}
        result["counts"] = arrays["X"]
        return result

    def _indices(self, adata: AnnData, indices) -> np.ndarray:
        n = adata.n_obs
        if indices is None:
            return np.arange(n)
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ChipviInputError(f"indices out of range for {n} bins.")
        return idx

    def _columns(self, level: str) -> list[str]:
        if level == "library":
            return self.library_names
        if level == "group":
            return list(self.group_names)
        raise ChipviInputError(f"level must be 'library' or 'group', got {level!r}.")

    def _lfe_loc_scale(self, pred: dict, level: str) -> tuple[np.ndarray, np.ndarray]:
        gi = self.module.group_index.cpu().numpy()
        if level == "group":
            return pred["z_loc"], pred["z_scale"]
        loc = pred["z_loc"][:, gi] + pred["delta_loc"]
        scale = np.sqrt(pred["z_scale"][:, gi] ** 2 + pred["delta_scale"] ** 2)
        return loc, scale

    def _baseline(self, pred: dict, level: str) -> np.ndarray:
        """Typical technical mean per column: reads a bin would get without bin-specific technique."""
        per_lib = np.median(np.exp(pred["log_mu"]), axis=0)
        if level == "library":
            return per_lib
        gi = self.module.group_index.cpu().numpy()
        return np.array(
            [np.exp(np.log(per_lib[gi == g]).mean()) for g in range(len(self.group_names))]
        )

    def _frame(self, values, adata, idx, level, return_numpy):
        values = values[idx]
        if return_numpy:
            return values
        return pd.DataFrame(values, index=adata.obs_names[idx], columns=self._columns(level))

    def get_denoised(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        kind: Kind = "log_fold_enrichment",
        level: DenoisedLevel = "library",
        n_samples: int = 0,
        return_numpy: bool = False,
        batch_size: int | None = None,
    ) -> pd.DataFrame | np.ndarray:
        """Denoised signal per bin and library (or group).

        Parameters
        ----------
        adata
            AnnData with the training bins and libraries (default: the training AnnData).
        indices
            Bins to return (default all).
        kind
            ``"log_fold_enrichment"`` (posterior mean of the natural-log enrichment over the
            technical expectation), ``"log_fold_enrichment_lower"`` (its 5 % posterior
            quantile: a conservative score that is high only where the model is confident of
            enrichment, so bins without usable evidence, e.g. multi-mapper pile-ups, rank
            below background; use it to rank bins), ``"fold_enrichment"`` (exponential of the
            mean), ``"sd"`` (posterior sd of the log fold enrichment), ``"biological_rate"``
            (expected reads with the enrichment but a typical technical background: fold
            enrichment × the library's median technical mean).
        level
            ``"library"`` (group biology plus the library's own deviation: borrows strength
            from the replicates, the most accurate when they share the biology),
            ``"group"``, or ``"library_own"``: each library's posterior from its own reads
            only, under the learned technical NB and enrichment prior, with the enrichment
            piecewise constant along the chromosome (it carries over to the next bin with
            probability 0.8; exact on a grid, ``chipvi.module._own_evidence``). Use it to
            compare replicates as independent estimates, or to see what one library shows
            that its replicates do not (``benchmarks/RESULTS.md``: a shallow library's
            ``"library"`` output follows features only its replicate carries). Its
            ``"log_fold_enrichment_lower"`` beats MACS3 and bamCompare on every metric of
            ``benchmarks/bench_quality.py``.
        n_samples
            0: deterministic (guide means); > 0: Monte-Carlo over the guide (not for
            ``"library_own"``, which is exact).
        return_numpy
            Return an array instead of a DataFrame.
        batch_size
            Bins per prediction chunk.

        Returns
        -------
        DataFrame bins × libraries (or groups), index ``obs_names``.
        """
        self._check_if_trained(warn=True)
        kinds = get_args(Kind)
        if kind not in kinds:
            raise ChipviInputError(f"kind must be one of {kinds}, got {kind!r}.")
        if level == "library_own":
            if n_samples:
                raise ChipviInputError(
                    "level='library_own' is computed exactly on a grid; use n_samples=0."
                )
        else:
            self._columns(level)
        adata = self._check_adata(adata)
        idx = self._indices(adata, indices)
        pred = self._predict_all(adata, batch_size)
        columns = "library" if level == "library_own" else level
        if level == "library_own":
            own = self._own_evidence(adata, pred)
            mean, lower, sd = own["mean"], own["lower"], own["sd"]
        else:
            loc, scale = self._lfe_loc_scale(pred, level)
            if n_samples > 0:
                draws = loc[None] + scale[None] * np.random.default_rng().standard_normal(
                    (n_samples, *loc.shape)
                ).astype(loc.dtype)
                values = {
                    "log_fold_enrichment": lambda: draws.mean(0),
                    "log_fold_enrichment_lower": lambda: np.quantile(draws, LOWER_QUANTILE, axis=0),
                    "fold_enrichment": lambda: np.exp(draws).mean(0),
                    "sd": lambda: draws.std(0),
                    "biological_rate": lambda: np.exp(draws).mean(0) * self._baseline(pred, level),
                }[kind]()
                return self._frame(values, adata, idx, level, return_numpy)
            # The guide is Gaussian, so the quantile is exact without sampling.
            mean, lower, sd = loc, loc + NormalDist().inv_cdf(LOWER_QUANTILE) * scale, scale
        values = {
            "log_fold_enrichment": lambda: mean,
            "log_fold_enrichment_lower": lambda: lower,
            "fold_enrichment": lambda: np.exp(mean),
            "sd": lambda: sd,
            "biological_rate": lambda: np.exp(mean) * self._baseline(pred, columns),
        }[kind]()
        return self._frame(values, adata, idx, columns, return_numpy)

    @torch.inference_mode()
    def _own_evidence(self, adata: AnnData, pred: dict) -> dict[str, np.ndarray]:
        """Each library's own-evidence posterior (mean, sd, lower quantile) for every bin.

        One chain per run of adjacent bins: a new one starts where ``obs["chrom"]`` changes
        or, with ``start``/``end`` columns, where a bin does not start at the previous one's
        end (bins removed by a blacklist). Without these columns all bins form one chain, as
        the guide's encoder reads them.
        """
        n = adata.n_obs
        new_run = np.zeros(n, bool)
        new_run[0] = n > 0
        obs = adata.obs
        if "chrom" in obs:
            codes = pd.Categorical(obs["chrom"]).codes
            new_run[1:] |= codes[1:] != codes[:-1]
        if "start" in obs and "end" in obs:
            new_run[1:] |= obs["start"].to_numpy()[1:] != obs["end"].to_numpy()[:-1]
        starts = np.flatnonzero(new_run)
        bounds = np.r_[starts, n]
        device = next(self.module.parameters()).device
        grid = torch.as_tensor(OWN_GRID, dtype=torch.float32, device=device).reshape(-1, 1)
        log_prior = self.module.prior_z().log_prob(grid).reshape(-1).double().cpu().numpy()
        out = {k: np.empty(pred["log_mu"].shape) for k in ("mean", "sd", "lower")}
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            part = own_evidence_posterior(
                pred["counts"][lo:hi],
                pred["log_mu"][lo:hi],
                pred["log_r"][lo:hi],
                pred["weight"][lo:hi],
                log_prior,
                LOWER_QUANTILE,
            )
            for key, value in part.items():
                out[key][lo:hi] = value
        return out

    def sample_log_fold_enrichment(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        level: Level = "group",
        n_samples: int = 100,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Posterior draws of the log fold enrichment, shape ``(n_samples, bins, columns)``."""
        self._check_if_trained(warn=True)
        self._columns(level)
        adata = self._check_adata(adata)
        idx = self._indices(adata, indices)
        pred = self._predict_all(adata, batch_size)
        loc, scale = self._lfe_loc_scale(pred, level)
        loc, scale = loc[idx], scale[idx]
        noise = np.random.default_rng().standard_normal((int(n_samples), *loc.shape))
        return (loc[None] + scale[None] * noise).astype(np.float32)

    def get_technical(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        return_numpy: bool = False,
        batch_size: int | None = None,
    ) -> dict[str, pd.DataFrame | np.ndarray]:
        """Technical NB mean ``mu`` and dispersion ``r`` per bin and library."""
        self._check_if_trained(warn=True)
        adata = self._check_adata(adata)
        idx = self._indices(adata, indices)
        pred = self._predict_all(adata, batch_size)
        return {
            "mu": self._frame(np.exp(pred["log_mu"]), adata, idx, "library", return_numpy),
            "r": self._frame(np.exp(pred["log_r"]), adata, idx, "library", return_numpy),
        }

    def get_enrichment_pvalues(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        level: Level = "library",
        batch_size: int | None = None,
    ) -> dict[str, pd.DataFrame]:
        """P-value of each bin's count under the learned technical NB (no enrichment).

        ``P(Y >= y)`` for ``Y ~ NB(mu, r)``; at group level the replicates' counts are summed and
        compared with a moment-matched NB of the summed technical null. ``qvalue``:
        Benjamini–Hochberg over the bins returned, per column.
        """
        self._check_if_trained(warn=True)
        self._columns(level)
        adata = self._check_adata(adata)
        idx = self._indices(adata, indices)
        pred = self._predict_all(adata, batch_size)
        mu, r, y = np.exp(pred["log_mu"]), np.exp(pred["log_r"]), pred["counts"]
        if level == "group":
            gi = self.module.group_index.cpu().numpy()
            cols = [gi == g for g in range(len(self.group_names))]
            y = np.stack([y[:, c].sum(1) for c in cols], 1)
            mean = np.stack([mu[:, c].sum(1) for c in cols], 1)
            extra = np.stack([(mu[:, c] ** 2 / r[:, c]).sum(1) for c in cols], 1)
            mu, r = mean, mean**2 / np.maximum(extra, 1e-12)
        y, mu, r = y[idx], mu[idx], r[idx]
        pvalue = stats.nbinom.sf(y - 1, r, r / (r + mu))
        qvalue = (
            np.column_stack(
                [stats.false_discovery_control(pvalue[:, j]) for j in range(pvalue.shape[1])]
            )
            if len(idx)
            else pvalue
        )
        index, columns = adata.obs_names[idx], self._columns(level)
        return {
            "pvalue": pd.DataFrame(pvalue, index=index, columns=columns),
            "qvalue": pd.DataFrame(qvalue, index=index, columns=columns),
        }

    def differential_enrichment(
        self,
        group1: str,
        group2: str | None = None,
        *,
        adata: AnnData | None = None,
        delta: float = 0.5,
        fdr: float = 0.05,
        n_samples: int = 100,
        **kwargs,
    ) -> pd.DataFrame:
        """Differential enrichment between two groups (scvi-tools ``differential_expression`` analogue).

        Per bin: posterior log fold change of the group enrichments, probability of a change
        larger than ``delta``, Bayesian FDR, and merged differential regions stored in
        ``adata.uns``. See :func:`chipvi.tl.differential_enrichment` for every option and the
        returned columns.

        Parameters
        ----------
        group1, group2
            Groups to compare (``lfc = group1 - group2``); ``group2=None`` compares with the rest.
        adata
            AnnData to evaluate (default the model's); results are stored there.
        delta
            Smallest absolute log fold change that counts as a change.
        fdr
            Target Bayesian false discovery rate.
        n_samples
            Posterior draws per bin.
        **kwargs
            Passed to :func:`chipvi.tl.differential_enrichment` (``merge_gap``, ``min_bins``,
            ``batch_size``, ``key_added``, ...).
        """
        from ..tl import differential_enrichment

        return differential_enrichment(
            self, group1, group2, adata=adata, delta=delta, fdr=fdr, n_samples=n_samples, **kwargs
        )

    # ----------------------------------------------------------------------------------------
    def save(self, dir_path: str | os.PathLike, overwrite: bool = False, **kwargs) -> None:
        """Save the model (weights, setup, training history) to a new folder ``dir_path``."""
        dir_path = Path(dir_path)
        if dir_path.exists() and not overwrite:
            raise ChipviInputError(f"{dir_path} already exists; pass overwrite=True to replace it.")
        if not dir_path.parent.is_dir():
            raise ChipviInputError(
                f"Output folder {dir_path.parent} does not exist; create it first."
            )
        tmp = dir_path.parent / f".{dir_path.name}.{uuid.uuid4().hex}.part"
        try:
            super().save(str(tmp), overwrite=False, save_anndata=False, **kwargs)
            info = {
                "chipvi_version": _version(),
                "library_names": self.library_names,
                "group_names": list(self.group_names),
                "n_bins": int(self.adata.n_obs),
                "obs_names_sha1": _obs_hash(self.adata.obs_names),
            }
            (tmp / _SAVE_INFO).write_text(json.dumps(info, indent=1))
            if dir_path.exists():
                shutil.rmtree(dir_path)
            os.replace(tmp, dir_path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    @classmethod
    def load(cls, dir_path: str | os.PathLike, adata: AnnData, **kwargs) -> ChIPVI:
        """Load a model saved with :meth:`save` for the same bins and libraries.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            The AnnData the model was trained on (same bins and libraries).
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (e.g. ``accelerator``).
        """
        dir_path = Path(dir_path)
        info_path = dir_path / _SAVE_INFO
        if not info_path.is_file():
            raise ChipviInputError(f"{dir_path} is not a saved ChIPVI model (no {_SAVE_INFO}).")
        info = json.loads(info_path.read_text())
        if info.get("chipvi_version") != _version():
            raise ChipviInputError(
                f"{dir_path} was saved by chipvi {info.get('chipvi_version')}, this is chipvi "
                f"{_version()}; retrain the model with this version."
            )
        if not isinstance(adata, AnnData):
            raise ChipviInputError(f"load needs the training AnnData, got {type(adata).__name__}.")
        if list(adata.var_names) != info["library_names"]:
            raise ChipviInputError(
                f"{dir_path} was trained on libraries {info['library_names']}, this AnnData has "
                f"{list(adata.var_names)}."
            )
        if adata.n_obs != info["n_bins"] or _obs_hash(adata.obs_names) != info["obs_names_sha1"]:
            raise ChipviInputError(
                f"{dir_path} was trained on other bins ({info['n_bins']} bins) than this AnnData "
                f"({adata.n_obs} bins)."
            )
        model = super().load(str(dir_path), adata=adata, **kwargs)
        model.module.eval()
        return model
