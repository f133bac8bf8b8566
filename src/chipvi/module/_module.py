"""The ChIPVI Pyro model and amortised guide (pure maths: tensors in, tensors out).

Generative story for bin ``i``, library ``j`` of group ``g(j)`` (DESIGN §3)::

    x_ij                      technical covariates (control, MAPQ, depth)
    log μ_ij, log r_ij        = technical network(x_ij)
    z_ig ~ π·N(0, s0) + (1−π)·N(m1, s1)     shared biology (sparse: most bins near 0)
    δ_ij ~ N(0, τ)                           library deviation (each library's own evidence),
                                             or AR(1) along bins (corr φ, marginal sd τ)
    w_i                       = mappability weight (≈0 where the reads are multi-mappers)
    y_ij ~ NB(mean = μ_ij·exp(z_ig(j) + δ_ij), dispersion r_ij)    with likelihood weight w_i
    y_ij ~ NB(mean = μ_ij, dispersion r_ij)                       with weight 1 − w_i
    factor: replicate consistency of z_ig(j) + δ_ij (MSE, Pearson)

Minibatches are runs of *consecutive* bins, which the covariate windows and the guide's
convolutional encoder use as genomic context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from scvi.module.base import PyroBaseModuleClass
from torch import nn

from ._covariates import COVARIATE_CONTEXT, COVARIATE_SETS, CovariateBuilder
from ._encoder import ENCODER_CONTEXT, WindowEncoder
from ._mlp import MLP
from ._nb import WeightedNegativeBinomial
from ._registry import CONSISTENCY, TECHNICAL

#: Rows of genomic context each side a prediction chunk needs for exact results.
CONTEXT = COVARIATE_CONTEXT + ENCODER_CONTEXT + 8

DATA_KEYS = ("X", "control", "mapq", "control_mapq")

_SCALE_FLOOR = 1e-3
#: Floor of the prior's component scales.
_SPIKE_FLOOR = 0.02


class ChipviModule(PyroBaseModuleClass):
    """Pyro model/guide pair of ChIPVI.

    Parameters
    ----------
    n_obs
        Number of training bins (scales the minibatch ELBO).
    group_index
        Group of each library, integers ``0..n_groups-1``.
    depth, control_depth, typical_mapq, typical_control_mapq
        Per-library constants (held as buffers: they must not go through the bin loader).
    log_mean
        Initial per-library log mean count.
    technical
        Name of a registered technical network (``"mu_r"`` or ``"r_p"``).
    covariates
        Name of a registered covariate set.
    consistency
        Names of registered consistency terms.
    consistency_weight
        One weight per term (or one for all).
    n_hidden, n_layers
        Size of the technical MLPs.
    n_encoder_hidden
        Channels of the guide's encoder.
    window
        Convolutional (windowed) encoder; ``False`` encodes each bin alone.
    random_walk_scale
        If set, adds a random-walk smoothness factor ``-(z_i - z_{i-1})² / (2 s²)``.
    library_scale
        Prior scale τ of the library deviations (fixed).
    library_smoothness
        ``None`` (independent deviations) or φ of their AR(1) prior along the bins of a
        minibatch (consecutive bins; the first bin of a minibatch keeps the N(0, τ) marginal).
    low_mapq
        Reads of mean MAPQ below this (over ±2 bins) are multi-mappers: with weight
        ``w = sigmoid((MAPQ - low_mapq) / 2)`` a bin's counts inform the enrichment, and with
        weight ``1 - w`` they are explained by the technical NB alone, so multi-mapper
        pile-ups teach the technical network and never become biology. ``None``: off.
    """

    def __init__(
        self,
        n_obs: int,
        group_index: torch.Tensor,
        depth: torch.Tensor,
        control_depth: torch.Tensor,
        typical_mapq: torch.Tensor,
        typical_control_mapq: torch.Tensor,
        log_mean: torch.Tensor,
        technical: str = "mu_r",
        covariates: str = "default",
        consistency: Sequence[str] = ("mse", "pearson"),
        consistency_weight: float | Sequence[float] = (1.0, 1.0),
        n_hidden: int = 32,
        n_layers: int = 2,
        n_encoder_hidden: int = 32,
        window: bool = True,
        random_walk_scale: float | None = None,
        library_scale: float = 0.2,
        library_smoothness: float | None = None,
        low_mapq: float | None = 10.0,
    ) -> None:
        super().__init__()
        self.n_obs = int(n_obs)
        self.n_libraries = int(group_index.numel())
        self.n_groups = int(group_index.max().item()) + 1
        self.register_buffer("group_index", group_index.long())
        membership = F.one_hot(group_index.long(), self.n_groups).float()
        self.register_buffer("group_mean", membership / membership.sum(0, keepdim=True))
        self._cache: tuple | None = None

        self.covariates = CovariateBuilder(
            depth, control_depth, typical_mapq, typical_control_mapq, COVARIATE_SETS[covariates]
        )
        self.technical = TECHNICAL[technical](
            self.covariates.n_covariates, log_mean, n_hidden=n_hidden, n_layers=n_layers
        )

        self.consistency_names = tuple(consistency)
        weights = (
            [float(consistency_weight)] * len(self.consistency_names)
            if isinstance(consistency_weight, int | float)
            else [float(w) for w in consistency_weight]
        )
        if len(weights) != len(self.consistency_names):
            raise ValueError("consistency_weight needs one weight per consistency term.")
        self.consistency_weights = tuple(weights)
        self.replicate_groups = [
            torch.nonzero(group_index == g).flatten()
            for g in range(self.n_groups)
            if int((group_index == g).sum()) > 1
        ]

        # Prior: spike at 0 and a slab of enrichment; learned (empirical Bayes).
        self.prior_logit = nn.Parameter(torch.tensor(2.0))  # spike weight ≈ 0.88
        self.prior_log_spike = nn.Parameter(torch.tensor(-2.0))
        self.prior_slab_loc = nn.Parameter(torch.tensor(1.5))
        self.prior_log_slab = nn.Parameter(torch.tensor(0.0))
        # Fixed, not learned: learned, it collapses to 0 and library outputs become copies of
        # the group's.
        self.library_scale = float(library_scale)
        self.library_smoothness = library_smoothness
        self.random_walk_scale = random_walk_scale
        self.low_mapq = low_mapq

        n_features = 5
        self.encoder = WindowEncoder(n_features, n_encoder_hidden, window=window)
        width = self.encoder.n_output
        self.head_z = MLP(width, 2, (n_encoder_hidden,))
        self.head_delta = MLP(2 * width, 2, (n_encoder_hidden,))
        for head in (self.head_z, self.head_delta):
            last = head.net[-1]
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, 0.0)
            last.bias.data[1] = -2.0  # start with small posterior scales

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _get_fn_args_from_batch(tensor_dict: dict[str, torch.Tensor]):
        return tuple(tensor_dict[k].float() for k in DATA_KEYS), {}

    @property
    def list_obs_plate_vars(self) -> dict:
        return {"name": "bins", "input": [], "sites": {"z": 1, "delta": 1}}

    # Parameters are plain torch parameters of this module, optimised by one torch optimiser
    # (scvi-tools' LowLevelPyroTrainingPlan); nothing goes through Pyro's global param store,
    # so two models in one process never share weights.
    def on_load(self, model, **kwargs) -> None:
        """Nothing to warm up: all parameters are module attributes restored by the state dict."""

    # ----------------------------------------------------------------------------------------
    def technical_parameters(self, counts, control, mapq, control_mapq):
        """``(log_mu, log_r)`` of the technical NB, each ``(bins, libraries)``."""
        x = self.covariates(counts, control, mapq, control_mapq)
        return self.technical(x)

    def mappability_weight(self, counts, control, mapq, control_mapq) -> torch.Tensor:
        """Likelihood weight per bin (``1`` unless the bin's reads are mostly multi-mappers)."""
        if self.low_mapq is None:
            return torch.ones_like(counts[:, 0])
        pooled = self.covariates.pooled_mapq(counts, control, mapq, control_mapq)
        return torch.sigmoid((pooled - self.low_mapq) / 2).amin(-1)

    def encode(self, counts, log_mu, log_r, weight):
        """Guide parameters: ``z_loc, z_scale`` (bins, groups), ``d_loc, d_scale`` (bins, libs).

        The encoder sees the evidence as the model weighs it: counts of down-weighted
        (multi-mapper) bins are masked by their likelihood weight, and the guide of such bins
        is moved to the prior by the same weight.
        """
        log_mu = log_mu.detach()
        wb = weight.unsqueeze(-1)  # (bins, 1): broadcasts over libraries and groups
        w = wb.expand_as(counts)
        features = torch.stack(
            [
                w * (torch.log(counts + 0.5) - torch.log(log_mu.exp() + 0.5)),
                w * torch.log1p(counts),
                log_mu - self.technical.bias_mu.detach(),
                log_r.detach(),
                w,
            ],
            dim=-1,
        )
        h = self.encoder(features)  # (B, J, H)
        h_group = torch.einsum("bjh,jg->bgh", h, self.group_mean)  # (B, G, H)
        out_z = self.head_z(h_group)
        out_d = self.head_delta(torch.cat([h, h_group[:, self.group_index]], dim=-1))
        z_loc, z_scale = out_z[..., 0], F.softplus(out_z[..., 1]) + _SCALE_FLOOR
        d_loc, d_scale = out_d[..., 0], F.softplus(out_d[..., 1]) + _SCALE_FLOOR
        # Where the likelihood weight is ~0 (multi-mapper bins) the counts say nothing about
        # z or δ, so the exact posterior is the prior: δ ~ N(0, τ), and for z the prior's
        # main mode, the spike at 0. Moving the guide there by the weight, instead of leaving
        # such rare bins to the encoder, puts them at 0 with the prior's (wider) uncertainty on
        # every training seed (measured: their mean score rank varied 0.43-0.51 over seeds).
        spike = (self.prior_log_spike.exp() + _SPIKE_FLOOR).detach()
        z_loc, z_scale = wb * z_loc, wb * z_scale + (1 - wb) * spike
        d_loc, d_scale = wb * d_loc, wb * d_scale + (1 - wb) * self.library_scale
        return z_loc, z_scale, d_loc, d_scale

    def prior_z(self) -> dist.Distribution:
        logits = torch.stack([self.prior_logit, torch.zeros_like(self.prior_logit)])
        locs = torch.stack([torch.zeros_like(self.prior_slab_loc), self.prior_slab_loc])
        scales = torch.stack([self.prior_log_spike, self.prior_log_slab]).exp() + _SPIKE_FLOOR
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales))

    # ----------------------------------------------------------------------------------------
    def model(self, counts, control, mapq, control_mapq, kl_weight: float = 1.0):
        """Generative model (see module docstring).

        ``kl_weight`` (scvi-tools' warm-up schedule, 0 → 1 over the first epochs) scales the
        biological term in the likelihood: early in training the technical network alone must
        explain the counts, so it learns the pile-ups that control and MAPQ predict (artefacts)
        before the sparse biology can claim them.
        """
        n_bins = counts.shape[0]
        if self._cache is not None and self._cache[0] is counts:
            log_mu, log_r, weight = self._cache[1:]
        else:
            log_mu, log_r = self.technical_parameters(counts, control, mapq, control_mapq)
            weight = self.mappability_weight(counts, control, mapq, control_mapq)
        self._cache = None
        library_scale = torch.tensor(self.library_scale, device=counts.device)
        with pyro.plate("bins", self.n_obs, subsample=torch.arange(n_bins, device=counts.device)):
            z = pyro.sample("z", self.prior_z().expand([n_bins, self.n_groups]).to_event(1))
            delta = pyro.sample(
                "delta",
                dist.Normal(counts.new_zeros(()), library_scale)
                .expand([n_bins, self.n_libraries])
                .to_event(1),
            )
            if self.library_smoothness is not None and n_bins > 1:
                # AR(1) prior along the genome instead of independent deviations: a library's
                # own feature spans several bins, and its evidence adds up over them.
                phi = self.library_smoothness
                step = dist.Normal(phi * delta[:-1], library_scale * math.sqrt(1 - phi**2))
                alone = dist.Normal(counts.new_zeros(()), library_scale)
                correction = (step.log_prob(delta[1:]) - alone.log_prob(delta[1:])).sum(-1)
                pyro.factor("delta_ar1", F.pad(correction, (1, 0)))
            lfe = z[:, self.group_index] + delta
            # Multi-mapper reads are evidence about technique: a bin's counts inform the
            # enrichment with weight w and are explained by the technical NB alone with
            # weight 1 - w. Without the second part the technical network never sees the
            # pile-ups, under-predicts them, and the weighted leftover becomes enrichment
            # (measured: log fold enrichment ~1.8 in pile-ups).
            pyro.sample(
                "y",
                WeightedNegativeBinomial(
                    log_mu + kl_weight * lfe, log_mu, log_r, weight.unsqueeze(-1)
                ).to_event(1),
                obs=counts,
            )
            if self.replicate_groups:
                for name, w in zip(self.consistency_names, self.consistency_weights, strict=True):
                    if w != 0:
                        term = CONSISTENCY[name](lfe, self.replicate_groups)
                        pyro.factor(f"consistency_{name}", w * term)
            if self.random_walk_scale is not None:
                step = torch.diff(z, dim=0, prepend=z[:1])
                pyro.factor("random_walk", -(step**2).sum(-1) / (2 * self.random_walk_scale**2))

    def guide(self, counts, control, mapq, control_mapq, kl_weight: float = 1.0):
        """Amortised mean-field guide over ``z`` and ``delta``."""
        n_bins = counts.shape[0]
        log_mu, log_r = self.technical_parameters(counts, control, mapq, control_mapq)
        weight = self.mappability_weight(counts, control, mapq, control_mapq)
        self._cache = (counts, log_mu, log_r, weight)
        z_loc, z_scale, d_loc, d_scale = self.encode(counts, log_mu, log_r, weight)
        with pyro.plate("bins", self.n_obs, subsample=torch.arange(n_bins, device=counts.device)):
            pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("delta", dist.Normal(d_loc, d_scale).to_event(1))

    # ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, counts, control, mapq, control_mapq) -> dict[str, torch.Tensor]:
        """Deterministic posterior summaries and technical parameters for a run of bins."""
        log_mu, log_r = self.technical_parameters(counts, control, mapq, control_mapq)
        weight = self.mappability_weight(counts, control, mapq, control_mapq)
        z_loc, z_scale, d_loc, d_scale = self.encode(counts, log_mu, log_r, weight)
        return {
            "weight": weight,
            "log_mu": log_mu,
            "log_r": log_r,
            "z_loc": z_loc,
            "z_scale": z_scale,
            "delta_loc": d_loc,
            "delta_scale": d_scale,
        }
