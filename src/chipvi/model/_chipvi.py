"""ChIPVI: the user-facing model class (scvi-tools style)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import stats
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField
from scvi.model.base import BaseModelClass, PyroSviTrainMixin

from .._bins import run_starts
from .._errors import ChipviInputError
from .._settings import settings
from .._utils import atomic_dir
from ..io import BinStore, is_store, open_store, store_adder
from ..module import (
    CONTEXT,
    CONTROL_WINDOWS,
    COVARIATE_SETS,
    GRID,
    STAY,
    ChainInputs,
    ChipviModule,
    chain_backward,
    list_consistency,
    list_covariate_sets,
    list_technical,
    posterior_piece_bins,
)
from ._dataloader import ContiguousDataSplitter, StoreDataSplitter
from ._guards import NonFiniteGuard
from ._plan import ChipviTrainingPlan
from ._runner import TrainRunner
from ._store_data import STORE_KEYS, STORE_LAYERS, StoreSource
from ._validate import check_bin_order, read_arrays, read_library_table

_SETUP_KEYS = ("layer", "control_layer", "mapq_layer", "control_mapq_layer")
_LIBRARY_KEYS = ("group_key", "depth_key", "control_depth_key")
_SAVE_INFO = "chipvi_model.json"
_CHUNK = 65536
#: Bins per piece of the posterior pass (None: :func:`chipvi.module.posterior_piece_bins`,
#: the longest chain whose emissions fit the engine's cache): whole chains joined up to this
#: size, a longer chain cut into equal pieces (exact: :meth:`ChIPVI._posterior_pieces`).
#: Memory is then set by the piece, not by the longest chromosome.
_POSTERIOR_BINS: int | None = None
#: Technical arrays of a long chain's backward sweep kept for its piece pass, up to this many
#: bytes (the network then runs once per bin; pieces past it run it again).
_TECH_KEEP_BYTES = 512 * 2**20
#: obs column written by :meth:`ChIPVI.setup_anndata`: 1 where a chain of adjacent bins starts.
RUN_START_KEY = "_chipvi_run_start"

Kind = Literal[
    "log_fold_enrichment",
    "log_fold_enrichment_lower",
    "fold_enrichment",
    "sd",
    "probability_enriched",
    "biological_rate",
]
Level = Literal["library", "group"]
#: ``get_denoised`` also has each library's own-evidence posterior.
DenoisedLevel = Literal["library", "group", "library_own"]

#: Posterior quantile reported by ``kind="log_fold_enrichment_lower"``.
LOWER_QUANTILE = 0.05

#: Keys :meth:`ChIPVI.add_posterior` writes (``{prefix}`` is its ``prefix``): layers per
#: library, obsm DataFrames per group.
POSTERIOR_KEYS = {
    ("library", "log_fold_enrichment"): "layers/{prefix}_lfe",
    ("library", "sd"): "layers/{prefix}_lfe_sd",
    ("library", "log_fold_enrichment_lower"): "layers/{prefix}_lfe_lower",
    ("library", "probability_enriched"): "layers/{prefix}_prob_enriched",
    ("library_own", "log_fold_enrichment"): "layers/{prefix}_own_lfe",
    ("library_own", "sd"): "layers/{prefix}_own_lfe_sd",
    ("library_own", "log_fold_enrichment_lower"): "layers/{prefix}_own_lfe_lower",
    ("library_own", "probability_enriched"): "layers/{prefix}_own_prob_enriched",
    ("group", "log_fold_enrichment"): "obsm/{prefix}_group_lfe",
    ("group", "sd"): "obsm/{prefix}_group_lfe_sd",
    ("group", "log_fold_enrichment_lower"): "obsm/{prefix}_group_lfe_lower",
    ("group", "probability_enriched"): "obsm/{prefix}_group_prob_enriched",
    ("technical", "mu"): "layers/{prefix}_mu",
    ("technical", "r"): "layers/{prefix}_r",
}
_STAT = {
    "log_fold_enrichment": "mean",
    "sd": "sd",
    "log_fold_enrichment_lower": "lower",
    "probability_enriched": "prob",
}


def _version() -> str:
    from .. import __version__

    return __version__


def _obs_hash(obs_names: pd.Index | Iterator[np.ndarray]) -> str:
    """SHA-1 of the bin names joined by newlines (``obs_names`` whole, or in blocks)."""
    blocks = [obs_names] if isinstance(obs_names, pd.Index) else obs_names
    digest = hashlib.sha1()
    for i, names in enumerate(blocks):
        digest.update((("\n" if i else "") + "\n".join(map(str, names))).encode())
    return digest.hexdigest()


def default_batch_size(n_obs: int) -> int:
    """Bins per minibatch: long runs of the chain (all bins when there are few)."""
    return int(min(max(n_obs, 1), 16384))


def default_max_epochs(n_obs: int, batch_size: int, n_steps: int = 400) -> int:
    """Epochs that give about ``n_steps`` optimiser steps (at least 2, at most 1000)."""
    steps_per_epoch = max(1, int(np.ceil(n_obs / batch_size)))
    return int(np.clip(round(n_steps / steps_per_epoch), 2, 1000))


def _n_threads() -> int:
    return settings.num_threads


class ChIPVI(PyroSviTrainMixin, BaseModelClass):
    """Denoised, replicate-consistent ChIP-seq enrichment with an exact chain posterior.

    Each ChIP library's counts follow a Negative Binomial whose technical mean and dispersion
    are learned from covariates (matched control counts and MAPQ, depths). The biology is one
    log fold enrichment per bin and **group**, shared by the group's replicates, that is
    piecewise constant along the genome: from one bin to the next it stays (with a learned
    probability per stay class, e.g. narrow peaks and broad domains) or is redrawn from a
    learned prior. Each library sees it with a learned gain (IP efficiency). The chain is
    summed out exactly (forward-backward on a grid), so training maximises the exact log
    marginal likelihood and the posterior of every bin is exact given the fitted parameters.

    Parameters
    ----------
    adata
        AnnData (bins × ChIP libraries) registered with :meth:`setup_anndata`, or a bins store
        (a :class:`~chipvi.io.BinStore` or its ``.zarr`` path, from ``read_bams(...,
        out=...)``; no ``setup_anndata``: it has the ``read_bams`` layout). A store is read a
        block at a time: training reads the same minibatches from disk and
        :meth:`add_posterior` writes the posterior back into it.
    technical
        Technical model (see :func:`chipvi.module.list_technical`): ``"control_slope"`` (mean
        proportional to a power ≤ 1 of the windowed control, with a learned floor; dispersion
        from the mean and covariates), ``"mu_r"`` (mean from an unconstrained network of the
        covariates) or ``"r_p"``.
    covariates
        Covariate set (see :func:`chipvi.module.list_covariate_sets`). The default,
        ``"control_only"`` (control counts at three widths, depths), and the small network
        below were chosen on thinned real data (``benchmarks/bench_real.py``, HESC_R1 and
        HSMM_R1 at thinning seed 1): with a few hundred reads, MAPQ covariates and a wider
        network let the technical mean fit noise.
    consistency
        Replicate-consistency terms (``pyro.factor`` on the replicates' log gains: ``"mse"``);
        ``()`` for none. Groups with a single library get none (with a warning).
    consistency_weight
        One weight per term, or one for all.
    n_hidden, n_layers
        Width and depth of the technical MLPs.
    low_mapq
        Bins whose reads (ChIP and control, ±2 bins) have a mean MAPQ below this are treated
        as multi-mapper pile-ups: their counts are explained by the technical model alone and
        the chain carries its neighbours' evidence over them; ``None`` turns it off.
    grid
        ``(lowest, highest, points)``: the grid of natural-log fold enrichments the chain
        lives on (``lowest < 0 < highest``, 8–401 points).
    stay
        Initial stay probability of each stay class, each in (0, 1) (1–4 classes; learned).
    enrichment_threshold
        Natural-log fold enrichment above which a bin counts as enriched for
        ``kind="probability_enriched"`` (default 0.5, fold ≈ 1.65).

    Examples
    --------
    >>> adata = chipvi.read_bams("samples.csv")
    >>> chipvi.ChIPVI.setup_anndata(adata)
    >>> model = chipvi.ChIPVI(adata)
    >>> model.train()
    >>> model.add_posterior()          # layers chipvi_lfe, chipvi_lfe_lower, ... in adata
    """

    _module_cls = ChipviModule
    _data_splitter_cls = ContiguousDataSplitter
    _training_plan_cls = ChipviTrainingPlan
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        adata: AnnData | BinStore | str | os.PathLike,
        technical: str = "control_slope",
        covariates: str = "control_only",
        consistency: Sequence[str] = ("mse",),
        consistency_weight: float | Sequence[float] = 1.0,
        n_hidden: int = 16,
        n_layers: int = 1,
        low_mapq: float | None = 10.0,
        grid: tuple[float, float, int] = GRID,
        stay: Sequence[float] = STAY,
        enrichment_threshold: float = 0.5,
    ) -> None:
        store = None
        if is_store(adata):
            store = open_store(adata, layers=STORE_LAYERS)
        elif not isinstance(adata, AnnData):
            raise ChipviInputError(
                f"ChIPVI needs an AnnData or a bins store (.zarr), got {type(adata).__name__}."
            )
        elif self._get_most_recent_anndata_manager(adata) is None:
            raise ChipviInputError(
                "This AnnData was not registered: call chipvi.ChIPVI.setup_anndata(adata) first."
            )
        for name, value, allowed in (
            ("technical", technical, list_technical()),
            ("covariates", covariates, list_covariate_sets()),
        ):
            if value not in allowed:
                raise ChipviInputError(f"{name}={value!r} is not one of {allowed}.")
        lacking = [c for c in CONTROL_WINDOWS if c not in COVARIATE_SETS[covariates]]
        if technical == "control_slope" and lacking:
            raise ChipviInputError(
                f"technical='control_slope' reads the control counts {lacking}, which "
                f"covariates={covariates!r} leaves out: pick a covariate set with them or "
                "technical='mu_r'."
            )
        consistency = (consistency,) if isinstance(consistency, str) else tuple(consistency)
        bad = [c for c in consistency if c not in list_consistency()]
        if bad:
            raise ChipviInputError(f"consistency terms {bad} unknown; use {list_consistency()}.")
        if isinstance(consistency_weight, int | float):
            consistency_weight = [float(consistency_weight)] * len(consistency)
        consistency_weight = [float(w) for w in consistency_weight]
        if len(consistency_weight) != len(consistency):
            raise ChipviInputError("consistency_weight needs one weight per consistency term.")
        if any(not np.isfinite(w) or w < 0 for w in consistency_weight):
            raise ChipviInputError(f"consistency_weight must be >= 0, got {consistency_weight}.")
        grid = _check_grid(grid)
        stay = _check_stay(stay)
        if not 0 < float(enrichment_threshold) < grid[1]:
            raise ChipviInputError(
                f"enrichment_threshold must lie in (0, {grid[1]}) (natural-log fold "
                f"enrichment inside the grid), got {enrichment_threshold!r}."
            )
        if low_mapq is not None and not 0 <= float(low_mapq) <= 255:
            raise ChipviInputError(
                f"low_mapq must be a MAPQ in [0, 255] or None, got {low_mapq!r}."
            )
        self._store, self._source = store, None
        if store is None:
            super().__init__(adata)
            keys = self._setup_keys
            arrays = read_arrays(adata, keys)
            table = read_library_table(adata, keys)
            sample, totals = arrays, arrays["X"].sum(0)
        else:
            # A store is read in blocks: no AnnData manager, the registry alone (the layout
            # read_bams writes); training reads it through StoreDataSplitter.
            super().__init__(registry=_store_registry())
            self._data_splitter_cls = StoreDataSplitter
            source = self._source = StoreSource(store)
            arrays, table, totals = source.arrays, source.table, source.totals
            sample = source.sample()  # all bins of a small store (MAPQ medians below)
        n_obs, var_names = (adata.n_obs, adata.var_names) if store is None else (
            store.n_obs, store.var.index)  # fmt: skip
        self._n_obs, self._library_names = n_obs, [str(v) for v in var_names]
        self.group_names = list(pd.unique(table["group"]))
        group_index = np.array([self.group_names.index(g) for g in table["group"]])
        singles = [g for g in self.group_names if (table["group"] == g).sum() == 1]
        if singles and any(consistency_weight):
            warnings.warn(
                f"Groups {singles} have a single library: the enrichment chain uses its reads "
                "alone and replicate consistency is off for them.",
                UserWarning,
                stacklevel=2,
            )
        typical_mapq = _typical(sample["mapq"], sample["X"] > 0)
        typical_cmapq = _typical(sample["control_mapq"], sample["control"] > 0)
        log_mean = np.log(totals / n_obs + 1e-3)
        self.enrichment_threshold = float(enrichment_threshold)

        self.module = self._module_cls(
            n_obs=n_obs,
            group_index=torch.as_tensor(group_index),
            depth=torch.as_tensor(table["depth"], dtype=torch.float32),
            control_depth=torch.as_tensor(table["control_depth"], dtype=torch.float32),
            typical_mapq=torch.as_tensor(typical_mapq, dtype=torch.float32),
            typical_control_mapq=torch.as_tensor(typical_cmapq, dtype=torch.float32),
            log_mean=torch.as_tensor(log_mean, dtype=torch.float32),
            technical=technical,
            covariates=covariates,
            consistency=consistency,
            consistency_weight=tuple(consistency_weight),
            n_hidden=n_hidden,
            n_layers=n_layers,
            low_mapq=low_mapq,
            grid=grid,
            stay=stay,
        )
        self._set_covariate_statistics(arrays)
        self._posterior_cache: tuple | None = None
        self._model_summary_string = (
            f"ChIPVI: {n_obs} bins × {len(var_names)} libraries in {len(self.group_names)} "
            f"groups; technical={technical!r}, covariates={covariates!r}, "
            f"consistency={dict(zip(consistency, consistency_weight, strict=True))}, "
            f"low_mapq={low_mapq}, grid={grid}, stay={stay}"
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

        Checks every input first (nothing is registered when one is bad). Writes
        ``adata.obs["_chipvi_run_start"]``: 1 where a chain of adjacent bins starts (first
        bin, a new ``chrom``, or a bin whose ``start`` is not the previous ``end``).

        Parameters
        ----------
        adata
            Bins × libraries, bins in genomic order.
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
        check_bin_order(adata.obs)
        adata.obs[RUN_START_KEY] = run_starts(adata.obs).astype(np.float32)
        fields = [
            LayerField("X", layer, is_count_data=True),
            LayerField("control", control_layer, is_count_data=True),
            LayerField("mapq", mapq_layer, is_count_data=False),
            LayerField("control_mapq", control_mapq_layer, is_count_data=False),
            NumericalObsField("run_start", RUN_START_KEY),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @property
    def _setup_keys(self) -> dict:
        args = self.registry_["setup_args"]
        return {k: args[k] for k in _SETUP_KEYS + _LIBRARY_KEYS}

    @property
    def library_names(self) -> list[str]:
        """Names of the ChIP libraries (``adata.var_names``)."""
        return list(self._library_names)

    def get_var_names(self, legacy_mudata_format: bool = False) -> np.ndarray:
        """Library names (what scvi-tools' ``save`` records)."""
        return np.asarray(self.library_names, dtype=str)

    @property
    def gains(self) -> pd.Series:
        """Learned gain of each library (geometric mean 1 within a group)."""
        with torch.no_grad():
            return pd.Series(self.module.gain().cpu().numpy(), index=self.library_names)

    @property
    def stay_probabilities(self) -> np.ndarray:
        """Learned stay probability of each stay class."""
        with torch.no_grad():
            return self.module.stay().cpu().numpy()

    def __repr__(self) -> str:
        state = "trained" if self.is_trained_ else "not trained"
        return f"{self._model_summary_string} ({state})"

    # ----------------------------------------------------------------------------------------
    def _set_covariate_statistics(self, arrays: dict[str, np.ndarray]) -> None:
        """z-score statistics of the covariates from (up to ~200k bins of) the training data."""
        n = arrays["X"].shape[0]
        chunk = 8192
        step = max(1, int(np.ceil(n / 200_000)))
        raws = []
        for start in range(0, n, chunk * step):
            part = {
                k: torch.as_tensor(v[start : start + chunk], dtype=torch.float32)
                for k, v in arrays.items()
            }
            raws.append(
                self.module.covariates.raw(
                    part["X"], part["control"], part["mapq"], part["control_mapq"]
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
        lr: float = 2e-2,
        early_stopping: bool = False,
        train_size: float = 1.0,
        callbacks: list | None = None,
        warmup_fraction: float = 0.1,
        **trainer_kwargs,
    ):
        """Fit the model by maximising the exact log marginal likelihood (Lightning's arguments).

        Parameters
        ----------
        max_epochs
            Passes over the bins; default gives about 400 optimiser steps (2–1000 epochs).
        accelerator, devices, strategy
            As in :class:`lightning.pytorch.Trainer` (``"gpu"`` needs a CUDA device).
            Several devices or processes: ``devices=N, strategy="ddp"`` (Lightning's DDP; on
            CPU too, ``accelerator="cpu", devices=2``). Lightning starts ranks 1.. by running
            the script again, so call it from a script (not a notebook); the ranks end with
            the same parameters.
        batch_size
            Consecutive bins per minibatch, each conditioned on the bins before it (the
            objective does not depend on it beyond float noise); default
            ``min(n_bins, 16384)``.
        lr
            Learning rate of Adam (gradients clipped at norm 10).
        early_stopping
            Stop when the training objective stops improving (Lightning's ``EarlyStopping``).
        train_size
            Fraction of bins used for fitting (a contiguous leading run of the genome); the
            posterior is computed for every bin.
        callbacks
            Lightning callbacks.
        warmup_fraction
            Fraction of the epochs over which the enrichment's likelihood weight is ramped in
            (the technical network first learns what the covariates explain).
        **trainer_kwargs
            Passed to the Lightning trainer (``enable_progress_bar`` defaults to
            ``chipvi.settings.progress_bar``). Lightning's messages follow
            ``chipvi.settings.verbosity``; torch and numba use ``chipvi.settings.num_threads``.
        """
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ChipviInputError(
                "accelerator='gpu' was requested but no CUDA GPU is available to torch; "
                "use accelerator='cpu' or 'auto'."
            )
        if not 0 < train_size <= 1:
            raise ChipviInputError(f"train_size must be in (0, 1], got {train_size}.")
        if not 0 <= warmup_fraction < 1:
            raise ChipviInputError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}.")
        n_obs = self._n_obs
        batch_size = default_batch_size(n_obs) if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ChipviInputError(
                f"batch_size must be a positive number of bins, got {batch_size}."
            )
        n_train = max(1, int(round(n_obs * train_size)))
        if max_epochs is None:
            max_epochs = default_max_epochs(n_train, batch_size)
        self.module.n_obs = n_train
        self.module.n_threads = _n_threads()
        warmup = int(round(warmup_fraction * max_epochs))
        training_plan = self._training_plan_cls(
            self.module,
            optim=torch.optim.Adam,
            optim_kwargs={"lr": lr},
            n_epochs_kl_warmup=warmup if warmup > 0 else None,
            n_steps_kl_warmup=None,
            # The objective is a sum over bins: per-bin scale keeps Adam's steps and the
            # logged value comparable across data sizes.
            scale_elbo=1.0 / n_train,
        )
        trainer_kwargs.setdefault("gradient_clip_val", 10.0)
        trainer_kwargs["callbacks"] = [NonFiniteGuard(self.library_names), *(callbacks or [])]
        trainer_kwargs.setdefault("strategy", strategy)
        # The Pyro training plan logs only the training objective (no validation step).
        trainer_kwargs.setdefault("early_stopping_monitor", "elbo_train")
        trainer_kwargs.setdefault("enable_progress_bar", settings.progress_bar)
        if self._source is not None:
            trainer_kwargs["datasplitter_kwargs"] = {
                **trainer_kwargs.get("datasplitter_kwargs", {}),
                "source": self._source,
            }
        self._posterior_cache = None
        self.module.train()
        try:
            with settings.lightning_context():
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
            self.module.eval()
            self._posterior_cache = None
        self._warn_if_still_improving()

    def _warn_if_still_improving(self) -> None:
        """Warn when the training objective was still falling at the last epochs."""
        history = self.history.get("elbo_train") if self.history else None
        if history is None or len(history) < 20:
            return
        loss = history.to_numpy(dtype=float).ravel()
        tail = max(5, len(loss) // 10)
        last, before = np.median(loss[-tail:]), np.median(loss[-2 * tail : -tail])
        # The objective is per bin (nats). It counts as still falling when the last tenth's
        # median is below the one before by 0.1 % and by three standard errors of that
        # difference: the epoch-to-epoch noise (from successive differences, robust to the
        # trend) can exceed 0.1 % when minibatches are few and unlike each other.
        steps = np.diff(loss[-2 * tail :])
        noise = 1.4826 * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2)
        se = np.sqrt(2) * 1.2533 * noise / np.sqrt(tail)
        if before - last > max(1e-3 * max(abs(last), 1e-3), 3 * se):
            warnings.warn(
                f"Training stopped while the objective was still falling ({before:.4f} -> "
                f"{last:.4f} per bin over the last {tail} epochs): train longer, e.g. "
                f"model.train(max_epochs={2 * len(loss)}).",
                UserWarning,
                stacklevel=3,
            )

    # ----------------------------------------------------------------------------------------
    def _check_adata(self, adata: AnnData | None) -> AnnData:
        if adata is None:
            if self._store is not None:
                raise ChipviInputError(
                    f"This model reads the bins store {self._store.path}: model.add_posterior() "
                    "writes its posterior there. Pass an AnnData of the same bins to have "
                    "results in memory (chipvi.io.open_store(path).to_memory())."
                )
            return self.adata
        if not isinstance(adata, AnnData):
            raise ChipviInputError(f"Expected an AnnData, got {type(adata).__name__}.")
        if list(adata.var_names) != self.library_names:
            raise ChipviInputError(
                f"This AnnData has libraries {list(adata.var_names)}, the model was trained on "
                f"{self.library_names}; use the same libraries in the same order."
            )
        if adata.n_obs != self._n_obs or (
            self.adata is not None and not adata.obs_names.equals(self.adata.obs_names)
        ):
            raise ChipviInputError(
                f"This AnnData has other bins ({adata.n_obs}) than the model was trained on "
                f"({self._n_obs}); train a model on it instead."
            )
        return adata

    def _technical_all(self, adata: AnnData, batch_size: int | None) -> dict[str, np.ndarray]:
        """Technical NB parameters and mappability weight for every bin."""
        return self._technical(read_arrays(adata, self._setup_keys), 0, adata.n_obs, batch_size)

    def _technical(
        self, arrays: dict[str, np.ndarray], start: int, stop: int, batch_size: int | None
    ) -> dict[str, np.ndarray]:
        """Technical NB parameters and mappability weight of bins ``[start, stop)`` of
        ``arrays`` (chunks, each with its neighbours in ``arrays`` as context)."""
        chunk = _CHUNK if batch_size is None else max(int(batch_size), 1)
        n = len(arrays["X"])
        device = next(self.module.parameters()).device
        self.module.eval()
        pieces: dict[str, list[np.ndarray]] = {}
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            lo, hi = max(0, a - CONTEXT), min(n, b + CONTEXT)
            tensors = [
                torch.as_tensor(arrays[k][lo:hi], dtype=torch.float32, device=device)
                for k in ("X", "control", "mapq", "control_mapq")
            ]
            out = self.module.predict_technical(*tensors)
            for key, value in out.items():
                pieces.setdefault(key, []).append(value[a - lo : b - lo].cpu().numpy())
        result = {k: np.concatenate(v, 0) for k, v in pieces.items()}
        result["counts"] = np.asarray(arrays["X"][start:stop], dtype=np.float32)  # no copy if f32
        return result

    def _chain_posterior(
        self, run_start: np.ndarray, tech: dict, groups: tuple, thresholds, n_draws=0, seed=None,
        alpha_in=None, beta_in=None,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        # The posterior pass runs on CPU (numba, chromosomes and chains over threads) even
        # for a model trained on a GPU: the torch engine's per-bin loop is written for
        # training minibatches, not for whole genomes.
        self.module.n_threads = _n_threads()

        def t(x):
            return torch.as_tensor(x, device="cpu")

        starts = tuple(int(i) for i in np.flatnonzero(run_start))
        return self.module.posterior(
            t(tech["counts"]), t(tech["log_mu"]), t(tech["log_r"]), t(tech["weight"]),
            starts, groups, LOWER_QUANTILE, thresholds, n_draws=n_draws, seed=seed,
            alpha_in=alpha_in, beta_in=beta_in,
        )  # fmt: skip

    def _chain_backward(self, tech: dict, beta_in: np.ndarray | None) -> np.ndarray:
        """Backward messages before the bins of ``tech`` (one piece of one chain) for every
        chain of :meth:`_posterior_chains`, from those of its last bin (``None``: the end)."""
        module = self.module
        inputs = ChainInputs(
            *(torch.as_tensor(tech[k]) for k in ("counts", "log_mu", "log_r", "weight")),
            module.gain().detach().cpu(), self._posterior_chains(), (0,),
        )  # fmt: skip
        transition = {k: v.detach().cpu() for k, v in module.transition().items()}
        return chain_backward(
            inputs, outlier=module.outlier, beta_in=beta_in, n_threads=_n_threads(), **transition
        )

    def _posterior_chains(self) -> tuple:
        """The chains of the posterior pass: the model's groups, then each library alone."""
        own = tuple((j,) for j in range(len(self.library_names)))
        return tuple(dict.fromkeys(self.module.groups + own))

    def _posterior(self, adata: AnnData, batch_size: int | None = None) -> dict:
        """The one posterior pass: every level and summary for every bin (cached)."""
        # Keyed on the AnnData object itself (a weak reference: an id can be reused once the
        # object is gone); _check_adata has already matched its bins and libraries.
        if self._posterior_cache is not None and self._posterior_cache[0]() is adata:
            return self._posterior_cache[1]
        arrays = read_arrays(adata, self._setup_keys)
        n = adata.n_obs
        post: dict = {}

        def write(a: int, b: int, piece: dict) -> None:
            """Copy a piece into the whole-genome arrays (made at the first piece)."""
            if not post:
                post.update(_like(piece, n))
            _put(post, piece, a, b)

        def read(lo: int, hi: int) -> dict[str, np.ndarray]:
            return {k: v[lo:hi] for k, v in arrays.items()}

        starts = np.flatnonzero(run_starts(adata.obs))
        self._posterior_pieces(read, starts, n, batch_size, write)
        self._posterior_cache = (weakref.ref(adata), post)
        return post

    def _posterior_pieces(self, read, starts: np.ndarray, n: int, batch_size, write) -> None:
        """The posterior of bins ``[0, n)``, exact, a piece (:data:`_POSTERIOR_BINS`) at a time.

        ``read(lo, hi)``: the four data arrays of bins ``[lo, hi)``; ``starts``: the sorted
        bins where a chain starts; ``write(a, b, post)`` takes each piece's
        :meth:`_posterior_range`, in genome order. A chain longer than a piece is swept
        backward first, its last piece first, keeping only the backward messages at its piece
        borders; then each piece starts from the forward messages where the piece before
        ended and ends at the kept backward messages, so the result is the whole chain's.
        """
        size = _POSTERIOR_BINS or posterior_piece_bins(
            len(self.module.grid), max(len(g) for g in self.module.groups)
        )
        # Whole chains are joined up to one piece per thread (their chains run side by side)
        pieces = _pieces(starts, n, size, size * max(_n_threads(), 1))

        def starts_chain(a: int) -> bool:
            i = np.searchsorted(starts, a)
            return i < starts.size and starts[i] == a

        def context(a: int, b: int) -> tuple[dict, int, int]:
            lo, hi = max(0, a - CONTEXT), min(n, b + CONTEXT)
            return read(lo, hi), a - lo, b - lo

        betas: dict[int, np.ndarray] = {}  # backward messages before the piece starting there
        kept: dict[int, dict] = {}  # the sweep's technical arrays, while they fit
        room = _TECH_KEEP_BYTES
        for a, b in reversed(pieces):
            if not starts_chain(a):
                tech = self._technical(*context(a, b), batch_size)
                betas[a] = self._chain_backward(tech, betas.get(b))
                size = sum(v.nbytes for v in tech.values())
                if size <= room:
                    kept[a], room = tech, room - size
        alpha = None
        for a, b in pieces:
            flags = np.zeros(b - a, bool)
            flags[starts[np.searchsorted(starts, a) : np.searchsorted(starts, b)] - a] = True
            flags[0] = True  # the piece's first run (continuing a chain when alpha_in is given)
            # A piece whose technical arrays were kept needs no data read again.
            tech = kept.pop(a, None)
            post = self._posterior_range(
                *(context(a, b) if tech is None else (None, 0, b - a)), batch_size,
                run_start=flags, alpha_in=None if starts_chain(a) else alpha,
                beta_in=betas.pop(b, None), tech=tech,
            )  # fmt: skip
            alpha = post.pop("alpha_out")
            write(a, b, post)

    def _posterior_range(
        self,
        arrays: dict[str, np.ndarray] | None,
        start: int,
        stop: int,
        batch_size: int | None,
        run_start: np.ndarray,
        alpha_in: np.ndarray | None = None,
        beta_in: np.ndarray | None = None,
        tech: dict | None = None,
    ) -> dict:
        """Every level and summary of bins ``[start, stop)`` of ``arrays`` (``run_start``
        flags their chains; the technical network's context is read around them), and
        ``alpha_out``; ``alpha_in`` / ``beta_in`` continue a chain cut at either end (see
        :func:`chipvi.module.chain_posterior`); ``tech``: their technical arrays if already
        computed (:meth:`_technical`; ``arrays`` is then not read and may be ``None``)."""
        if tech is None:
            tech = self._technical(arrays, start, stop, batch_size)
        model_groups = self.module.groups
        n_lib = len(self.library_names)
        own = tuple((j,) for j in range(n_lib))
        chains = self._posterior_chains()
        gain = self.gains.to_numpy()
        gi = self.module.group_index.cpu().numpy()
        tau = self.enrichment_threshold
        # Which chain each level's column reads: library columns see their chain × gain.
        sources = {
            "group": model_groups,
            "library": tuple(model_groups[g] for g in gi),
            "library_own": own,
        }
        scales = {"group": np.ones(len(model_groups)), "library": gain, "library_own": gain}
        # Each chain's tail probabilities only at the thresholds read from it:
        # P(gain·e > τ) = P(e > τ / gain).
        reads: dict[tuple, list] = {c: [] for c in chains}
        for level_name, columns in sources.items():
            for col, chain in enumerate(columns):
                reads[chain].append((level_name, col, tau / scales[level_name][col]))
        thresholds = [[thr for _, _, thr in reads[c]] for c in chains]
        out = self._chain_posterior(
            run_start, tech, chains, thresholds, alpha_in=alpha_in, beta_in=beta_in
        )
        post: dict = {name: {} for name in sources}
        post["alpha_out"] = out.pop("alpha_out")
        # Level arrays are float32 copies; each summary of the chains is dropped as soon as
        # its levels exist (peak: the chains' summaries plus one summary's levels).
        for stat in ("mean", "sd", "lower"):
            values = out.pop(stat)
            for name, columns in sources.items():
                level = values[:, [chains.index(c) for c in columns]]
                level *= scales[name].astype(np.float32)
                post[name][stat] = level
            del values
        for name, columns in sources.items():
            post[name]["prob"] = np.empty((stop - start, len(columns)), np.float32)
        probs = out.pop("prob")
        for k, chain in enumerate(chains):
            for t, (name, col, _) in enumerate(reads[chain]):
                post[name]["prob"][:, col] = probs[k][:, t]
            probs[k] = None
        del out, probs
        # The technical mean and dispersion layers, made in place (the logs are not kept).
        post["mu"] = np.exp(tech["log_mu"], out=tech["log_mu"])
        post["r"] = np.exp(tech["log_r"], out=tech["log_r"])
        return post

    def add_posterior(
        self,
        adata: AnnData | BinStore | str | os.PathLike | None = None,
        prefix: str = "chipvi",
        batch_size: int | None = None,
    ) -> None:
        """Compute the posterior in one pass and write it into ``adata``.

        Writes (natural-log fold enrichment over the technical expectation throughout):

        * layers (bins × libraries): ``{prefix}_lfe`` (posterior mean), ``{prefix}_lfe_sd``,
          ``{prefix}_lfe_lower`` (5 % quantile), ``{prefix}_prob_enriched`` (P(lfe >
          ``enrichment_threshold``)); the same with ``{prefix}_own_`` for each library's own
          evidence (its reads alone, ``level="library_own"``); ``{prefix}_mu``,
          ``{prefix}_r`` (technical NB mean and dispersion);
        * obsm (bins × groups, DataFrames): ``{prefix}_group_lfe``, ``{prefix}_group_lfe_sd``,
          ``{prefix}_group_lfe_lower``, ``{prefix}_group_prob_enriched``;
        * ``uns[f"{prefix}_posterior"]``: ``params`` (quantile, threshold, log base, grid,
          learned stay probabilities and gains) and ``keys`` (``keys[level][kind]`` =
          ``"layers/NAME"`` or ``"obsm/NAME"``).

        :meth:`get_denoised` reads the same pass.

        Parameters
        ----------
        adata
            AnnData with the training bins and libraries (default: the training AnnData), or
            a bins store of those bins (default for a model on a store): written into the
            store a piece at a time, its ``uns`` record last. Either way the pass runs in
            pieces of bounded length (a long chromosome in several, exactly: the chain's
            messages are carried across piece borders), so its working memory does not grow
            with the longest chromosome.
        prefix
            Prefix of every key written.
        batch_size
            Bins per chunk of the technical network.
        """
        self._check_if_trained(warn=True)
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise ChipviInputError(f"prefix must be a plain name like 'chipvi', got {prefix!r}.")
        if is_store(adata) or (adata is None and self._store is not None):
            self._add_posterior_to_store(adata, prefix, batch_size)
            return
        adata = self._check_adata(adata)
        arrays, written = self._posterior_arrays(self._posterior(adata, batch_size), prefix)
        for name, values in arrays["layers"].items():
            adata.layers[name] = values
        for name, values in arrays["obsm"].items():
            adata.obsm[name] = pd.DataFrame(
                values, index=adata.obs_names, columns=self.group_names, copy=False
            )
        adata.uns[f"{prefix}_posterior"] = self._posterior_record(written)

    def _add_posterior_to_store(
        self, store: BinStore | str | os.PathLike | None, prefix: str, batch_size: int | None
    ) -> None:
        """:meth:`add_posterior` into a store: a piece at a time (:meth:`_posterior_pieces`),
        each written back as it is done; the ``uns`` record, written last, marks the pass
        complete."""
        store = self._check_store(store)
        source = self._source if store is self._store else StoreSource(store)
        # Ranges of one chain each (max_bins=1): their starts are the chains' starts.
        starts = np.array([a for a, _ in store.run_ranges(1)], np.int64)
        written: dict = {}

        def write(a: int, b: int, post: dict) -> None:
            arrays, keys = self._posterior_arrays(post, prefix)
            written.update(keys)
            groups = {k: pd.DataFrame(v, columns=self.group_names, copy=False)
                      for k, v in arrays["obsm"].items()}  # fmt: skip
            adder.append(arrays["layers"], groups)

        with store_adder(store) as adder:
            self._posterior_pieces(source.read, starts, store.n_obs, batch_size, write)
            adder.finish({f"{prefix}_posterior": self._posterior_record(written)})

    def _check_store(self, store: BinStore | str | os.PathLike | None) -> BinStore:
        """The model's store (``None``) or another store of the same bins and libraries."""
        if store is None or store is self._store:
            return self._store
        store = open_store(store, layers=STORE_LAYERS)
        if list(store.var.index) != self.library_names or store.n_obs != self._n_obs:
            raise ChipviInputError(
                f"{store.path} has {store.n_obs} bins x libraries {list(store.var.index)}; the "
                f"model was trained on {self._n_obs} bins x {self.library_names}."
            )
        return store

    def _posterior_arrays(self, post: dict, prefix: str) -> tuple[dict, dict]:
        """``{"layers": {name: array}, "obsm": {name: array}}`` of :data:`POSTERIOR_KEYS`
        from a posterior pass, and the ``keys`` record (``keys[level][kind]``)."""
        arrays: dict[str, dict[str, np.ndarray]] = {"layers": {}, "obsm": {}}
        written: dict[str, dict[str, str]] = {}
        for (level, kind), template in POSTERIOR_KEYS.items():
            slot, name = template.format(prefix=prefix).split("/")
            if level == "technical":
                values = post[kind]
            else:
                values = post[level][_STAT[kind]]
            arrays[slot][name] = np.asarray(values, dtype=np.float32)  # no copy if float32
            written.setdefault(level, {})[kind] = f"{slot}/{name}"
        return arrays, written

    def _posterior_record(self, written: dict) -> dict:
        """``uns[f"{prefix}_posterior"]``: the parameters of the pass and where it wrote."""
        return {
            "params": {
                "lower_quantile": LOWER_QUANTILE,
                "enrichment_threshold": self.enrichment_threshold,
                "log_base": "e",
                "grid": self.module.grid.cpu().numpy().astype(float),
                "stay": self.stay_probabilities.astype(float),
                "gains": self.gains.to_dict(),
                "chipvi_version": _version(),
            },
            "keys": written,
        }

    def _columns(self, level: str) -> list[str]:
        if level in ("library", "library_own"):
            return self.library_names
        if level == "group":
            return list(self.group_names)
        raise ChipviInputError(f"level must be 'library', 'group' or 'library_own', got {level!r}.")

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

    def _baseline(self, post: dict, level: str) -> np.ndarray:
        """Typical technical mean per column: reads a bin would get without bin-specific technique."""
        per_lib = np.median(post["mu"], axis=0)
        if level != "group":
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
        adata: AnnData | BinStore | str | os.PathLike | None = None,
        indices: Sequence[int] | None = None,
        kind: Kind = "log_fold_enrichment",
        level: DenoisedLevel = "library",
        return_numpy: bool = False,
        batch_size: int | None = None,
        out: str | os.PathLike | None = None,
        track_format: Literal["bigwig", "bedgraph"] | None = None,
        overwrite: bool = False,
    ) -> pd.DataFrame | np.ndarray | dict[str, Path]:
        """Denoised signal per bin and library (or group), from the exact posterior.

        Reads the same posterior pass as :meth:`add_posterior` (computed once and reused).
        With ``out``, the signal is written as tracks instead of returned: for a model on a
        bins store this is how to get it genome-wide, in bounded memory (the posterior that
        ``add_posterior(store)`` wrote, or one such pass first, read back a chunk at a time).

        Parameters
        ----------
        adata
            AnnData with the training bins and libraries (default: the training AnnData); with
            ``out``, also a bins store of those bins (default for a model on a store).
        indices
            Bins to return (default all).
        kind
            ``"log_fold_enrichment"`` (posterior mean of the natural-log enrichment over the
            technical expectation), ``"log_fold_enrichment_lower"`` (its 5 % posterior
            quantile: high only where the model is confident of enrichment; use it to rank
            bins), ``"fold_enrichment"`` (exponential of the mean), ``"sd"`` (posterior sd),
            ``"probability_enriched"`` (posterior probability that the log fold enrichment
            exceeds ``enrichment_threshold``), ``"biological_rate"`` (expected reads with the
            enrichment but a typical technical background: fold enrichment × the library's
            median technical mean).
        level
            ``"group"`` (the group's chain, all replicates as joint evidence),
            ``"library"`` (the group's chain as each library sees it: × its gain), or
            ``"library_own"`` (each library's chain from its own reads alone, × its gain: no
            borrowing from replicates, so replicates can be compared as independent
            estimates).
        return_numpy
            Return an array instead of a DataFrame.
        batch_size
            Bins per chunk of the technical network.
        out
            Write one track per library (or group) instead of returning the values: a folder
            (``<name>.bw`` / ``<name>.bedGraph`` in it) or, for one column, a ``.bw`` /
            ``.bedGraph`` file (see :func:`chipvi.io.write_bigwig`). Every bin is written.
        track_format
            ``"bigwig"`` or ``"bedgraph"``; default from the suffix of ``out`` (bigWig unless it
            ends in ``.bedGraph``, ``.bg`` or ``.bdg``).
        overwrite
            With ``out``: replace existing track files.

        Returns
        -------
        DataFrame bins × libraries (or groups), index ``obs_names``; with ``out``, a dict
        track name → written path.

        Examples
        --------
        >>> model = chipvi.ChIPVI(chipvi.io.open_store("bins.zarr"))  # doctest: +SKIP
        >>> model.train()  # doctest: +SKIP
        >>> model.get_denoised(level="group", out="tracks/")  # doctest: +SKIP
        """
        self._check_if_trained(warn=True)
        kinds = get_args(Kind)
        if kind not in kinds:
            raise ChipviInputError(f"kind must be one of {kinds}, got {kind!r}.")
        self._columns(level)
        if out is not None:
            return self._write_denoised(adata, indices, kind, level, batch_size, out,
                                        track_format, overwrite)  # fmt: skip
        adata = self._check_adata(adata)
        idx = self._indices(adata, indices)
        post = self._posterior(adata, batch_size)
        stats_ = post[level]
        if kind == "fold_enrichment":
            values = np.exp(stats_["mean"])
        elif kind == "biological_rate":
            values = np.exp(stats_["mean"]) * self._baseline(post, level)
        else:
            values = stats_[_STAT[kind]]
        return self._frame(values, adata, idx, level, return_numpy)

    def _write_denoised(self, adata, indices, kind, level, batch_size, out, track_format,
                        overwrite) -> dict[str, Path]:  # fmt: skip
        """:meth:`get_denoised` with ``out``: tracks of every bin, from a store chunk by chunk."""
        from .. import io
        from .._posterior import DERIVED, POSTERIOR_KEY, posterior_location, written_by

        if indices is not None:
            raise ChipviInputError(
                "get_denoised(out=...) writes every bin: leave indices unset (crop the bins "
                "first with chipvi.pp.filter_region)."
            )
        if track_format is None:
            bedgraph = Path(out).suffix.lower() in (".bedgraph", ".bg", ".bdg")
            track_format = "bedgraph" if bedgraph else "bigwig"
        if track_format not in ("bigwig", "bedgraph"):
            raise ChipviInputError(
                f"track_format must be 'bigwig' or 'bedgraph', not {track_format!r}."
            )
        writer = io.write_bigwig if track_format == "bigwig" else io.write_bedgraph
        if not (is_store(adata) or (adata is None and self._store is not None)):
            adata = self._check_adata(adata)
            frame = self.get_denoised(adata, kind=kind, level=level, batch_size=batch_size)
            tracks = AnnData(obs=adata.obs, uns=dict(adata.uns), obsm={"denoised": frame})
            return writer(tracks, out, key="denoised", overwrite=overwrite)
        if kind == "biological_rate":
            raise ChipviInputError(
                "kind='biological_rate' needs the median technical mean over the whole genome; "
                "from a store write kind='fold_enrichment' (it is that rate over the median)."
            )
        store = self._check_store(adata)
        if not written_by(store.uns.get(POSTERIOR_KEY), self):  # absent, or another model's
            self.add_posterior(store, batch_size=batch_size)
        slot, name = posterior_location(store, DERIVED.get(kind, kind), level)
        select = {"layer": name} if slot == "layers" else {"key": name}
        transform = np.exp if kind in DERIVED else None
        return writer(store, out, overwrite=overwrite, transform=transform, **select)

    def sample_log_fold_enrichment(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        level: Level = "group",
        n_samples: int = 100,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Draws from each bin's marginal posterior, shape ``(n_samples, bins, columns)``.

        Bins are drawn independently (marginals, not joint paths); groups are independent
        given the fitted parameters, so differences between groups' draws have the exact
        per-bin law.
        """
        self._check_if_trained(warn=True)
        if level not in ("library", "group"):
            raise ChipviInputError(f"level must be 'library' or 'group', got {level!r}.")
        if int(n_samples) < 1:
            raise ChipviInputError(f"n_samples must be >= 1, got {n_samples!r}.")
        adata = self._check_adata(adata)
        idx = self._indices(adata, indices)
        tech = self._technical_all(adata, batch_size)
        out = self._chain_posterior(
            run_starts(adata.obs), tech, self.module.groups, [()] * len(self.module.groups),
            n_draws=int(n_samples), seed=seed,
        )  # fmt: skip
        draws = out["draws"]
        if level == "library":
            gi = self.module.group_index.cpu().numpy()
            draws = draws[:, :, gi] * self.gains.to_numpy()
        return draws[:, idx].astype(np.float32)

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
        pred = self._technical_all(adata, batch_size)
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
        pred = self._technical_all(adata, batch_size)
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
        **kwargs,
    ) -> pd.DataFrame:
        """Differential enrichment between two groups (scvi-tools ``differential_expression`` analogue).

        Runs :meth:`add_posterior` on ``adata`` unless it holds the posterior already, then
        :func:`chipvi.tl.differential_enrichment` (see there for every option and the returned
        columns): per bin the posterior log fold change of the group enrichments, probability
        of a change larger than ``delta``, Bayesian FDR, and merged differential regions.

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
        **kwargs
            Passed to :func:`chipvi.tl.differential_enrichment` (``merge_gap``, ``min_bins``,
            ``key_added``, ...).
        """
        from ..tl import differential_enrichment

        adata = self._check_adata(adata)
        if "chipvi_posterior" not in adata.uns:
            self.add_posterior(adata)
        return differential_enrichment(adata, group1, group2, delta=delta, fdr=fdr, **kwargs)

    # ----------------------------------------------------------------------------------------
    def save(
        self,
        dir_path: str | os.PathLike,
        overwrite: bool = False,
        save_anndata: bool = False,
        **kwargs,
    ) -> None:
        """Save the model (weights, setup, training history) to a new folder ``dir_path``.

        Parameters
        ----------
        dir_path
            Folder to create (written under a temporary name and renamed when complete).
        overwrite
            Replace an existing folder.
        save_anndata
            Also save the training AnnData (``adata.h5ad``), so :meth:`load` needs none.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save`.
        """
        # Written under a temporary name and renamed into place (a replaced folder is moved
        # aside first): a process killed while saving leaves no half-written model.
        with atomic_dir(dir_path, overwrite=overwrite) as tmp:
            super().save(str(tmp), overwrite=True, save_anndata=save_anndata, **kwargs)
            info = {
                "chipvi_version": _version(),
                "library_names": self.library_names,
                "group_names": list(self.group_names),
                "n_bins": int(self._n_obs),
                "obs_names_sha1": _obs_hash(
                    self.adata.obs_names if self._store is None else self._store.obs_names()
                ),  # fmt: skip
            }
            (tmp / _SAVE_INFO).write_text(json.dumps(info, indent=1))

    @classmethod
    def load(cls, dir_path: str | os.PathLike, adata: AnnData | None = None, **kwargs) -> ChIPVI:
        """Load a model saved with :meth:`save` for the same bins and libraries.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            The AnnData the model was trained on (same bins and libraries); ``None`` loads the
            one saved with ``save(..., save_anndata=True)``.
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
        if adata is None:
            if not (dir_path / "adata.h5ad").is_file():
                raise ChipviInputError(
                    f"{dir_path} was saved without its AnnData: pass the training AnnData, "
                    "ChIPVI.load(path, adata), or save with save_anndata=True."
                )
        elif is_store(adata):
            return cls._load_on_store(dir_path, open_store(adata, layers=STORE_LAYERS), info)
        elif not isinstance(adata, AnnData):
            raise ChipviInputError(
                f"load needs the training AnnData or bins store, got {type(adata).__name__}."
            )
        else:
            if list(adata.var_names) != info["library_names"]:
                raise ChipviInputError(
                    f"{dir_path} was trained on libraries {info['library_names']}, this "
                    f"AnnData has {list(adata.var_names)}."
                )
            if (
                adata.n_obs != info["n_bins"]
                or _obs_hash(adata.obs_names) != info["obs_names_sha1"]
            ):
                raise ChipviInputError(
                    f"{dir_path} was trained on other bins ({info['n_bins']} bins) than this "
                    f"AnnData ({adata.n_obs} bins)."
                )
        with _quiet_scvi_load():
            model = super().load(str(dir_path), adata=adata, **kwargs)
        model.module.eval()
        return model

    @classmethod
    def _load_on_store(cls, dir_path: Path, store: BinStore, info: dict) -> ChIPVI:
        """:meth:`load` for a bins store (scvi-tools' ``load`` sets up an AnnData)."""
        from scvi.model.base._save_load import _load_saved_files

        if list(store.var.index) != info["library_names"] or (
            store.n_obs != info["n_bins"] or _obs_hash(store.obs_names()) != info["obs_names_sha1"]
        ):
            raise ChipviInputError(
                f"{dir_path} was trained on other bins or libraries ({info['n_bins']} bins x "
                f"{info['library_names']}) than {store.path} ({store.n_obs} bins x "
                f"{list(store.var.index)})."
            )
        with _quiet_scvi_load():
            attr_dict, _, state, _ = _load_saved_files(str(dir_path), False, map_location="cpu")
        init = attr_dict.pop("init_params_")
        model = cls(store, **init["non_kwargs"], **init["kwargs"].get("kwargs", {}))
        for attr, value in attr_dict.items():
            setattr(model, attr, value)
        state.pop("pyro_param_store", None)
        model.module.load_state_dict(state)
        model.module.eval()
        return model


@contextlib.contextmanager
def _quiet_scvi_load() -> Iterator[None]:
    """scvi-tools logs "File ... already downloaded" at INFO for every local load."""
    quiet = logging.getLogger("scvi.data._download")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        quiet.setLevel(level)


def _store_registry() -> dict:
    """The scvi-tools registry of a model on a store: its setup arguments, no fields."""
    import scvi

    return {
        "scvi_version": scvi.__version__,
        "model_name": "ChIPVI",
        "setup_method_name": "setup_anndata",
        "setup_args": dict(STORE_KEYS),
        "field_registries": {},
    }


def _typical(mapq: np.ndarray, has_reads: np.ndarray) -> np.ndarray:
    """Median MAPQ of each library's bins with reads (30 where it has none)."""
    return np.array(
        [
            np.median(mapq[has_reads[:, j], j]) if has_reads[:, j].any() else 30.0
            for j in range(mapq.shape[1])
        ]
    )


def _check_grid(grid) -> tuple[float, float, int]:
    try:
        lo, hi, size = grid
        lo, hi, size = float(lo), float(hi), int(size)
    except (TypeError, ValueError):
        raise ChipviInputError(
            f"grid must be (lowest, highest, points), e.g. {GRID}, got {grid!r}."
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < 0 < hi) or not 8 <= size <= 401:
        raise ChipviInputError(
            f"grid {grid!r} is out of range: need lowest < 0 < highest (natural-log fold "
            "enrichments) and 8 to 401 points."
        )
    return lo, hi, size


def _check_stay(stay) -> tuple[float, ...]:
    values = (stay,) if isinstance(stay, int | float) else tuple(stay)
    try:
        values = tuple(float(s) for s in values)
    except (TypeError, ValueError):
        raise ChipviInputError(f"stay must be probabilities, got {stay!r}.") from None
    if not 1 <= len(values) <= 4 or not all(0 < s < 1 for s in values):
        raise ChipviInputError(f"stay must be 1 to 4 probabilities, each in (0, 1), got {stay!r}.")
    return values


def _pieces(starts: np.ndarray, n: int, size: int, join: int) -> list[tuple[int, int]]:
    """Pieces ``[a, b)`` of bins ``[0, n)`` for the posterior pass: a chain (``starts``: where
    each starts) longer than ``size`` bins cut into equal pieces of at most ``size``, other
    neighbouring chains joined while a piece holds at most ``join`` bins."""
    pieces, a = [], 0
    bounds = [*starts.tolist()[1:], n]
    for s, e in zip([0, *bounds[:-1]], bounds, strict=True):  # each chain [s, e)
        if e - s > size:
            if s > a:
                pieces.append((a, s))
            cuts = np.linspace(s, e, -(-(e - s) // size) + 1).round().astype(int).tolist()
            pieces += list(zip(cuts[:-1], cuts[1:], strict=True))
            a = e
        elif e - a > join:
            pieces.append((a, s))
            a = s
    return [*pieces, (a, n)] if a < n else pieces


def _like(piece: dict, n: int) -> dict:
    """Empty arrays of ``n`` rows shaped as a posterior piece's (nested dicts kept)."""
    return {k: _like(v, n) if isinstance(v, dict) else np.empty((n, *v.shape[1:]), v.dtype)
            for k, v in piece.items()}  # fmt: skip


def _put(whole: dict, piece: dict, a: int, b: int) -> None:
    """Copy a posterior piece into rows ``[a, b)`` of :func:`_like`'s arrays."""
    for k, v in piece.items():
        if isinstance(v, dict):
            _put(whole[k], v, a, b)
        else:
            whole[k][a:b] = v
