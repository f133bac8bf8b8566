"""Technical networks: per-bin, per-library NB mean and dispersion from covariates only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._mlp import MLP

LOG_R_MIN, LOG_R_MAX = -6.0, 10.0


class TechnicalNet(nn.Module):
    """Base class: maps covariates ``(bins, libraries, C)`` to ``(log_mu, log_r)``.

    Parameters
    ----------
    n_covariates
        Number of standardised covariates.
    log_mean
        Initial per-library log mean count (the network starts at this baseline).
    n_hidden, n_layers
        Width and depth of the MLPs.
    covariates
        The module's :class:`~._covariates.CovariateBuilder` (column names, standardisation),
        for networks that read raw covariates.
    """

    def __init__(
        self,
        n_covariates: int,
        log_mean: torch.Tensor,
        n_hidden: int,
        n_layers: int,
        covariates: nn.Module | None = None,
    ):
        super().__init__()
        self.n_covariates = n_covariates
        self.hidden = (n_hidden,) * n_layers
        self.bias_mu = nn.Parameter(log_mean.clone().float())
        self.bias_r = nn.Parameter(torch.full_like(log_mean, 1.0, dtype=torch.float32))
        # Linear part: extrapolates to covariate values rare in training (e.g. the very high
        # control counts of artefact pile-ups) where an MLP alone saturates.
        self.linear = nn.Linear(n_covariates, 1, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


class TechnicalMuR(TechnicalNet):
    """``log μ = b_j + f(x)``, ``log r = c_j + g(f(x), x)`` (dispersion follows the mean)."""

    def __init__(self, n_covariates, log_mean, n_hidden=32, n_layers=2, covariates=None):
        super().__init__(n_covariates, log_mean, n_hidden, n_layers)
        self.f = MLP(n_covariates, 1, self.hidden, zero_last=True)
        self.g = MLP(n_covariates + 1, 1, self.hidden, zero_last=True)

    def forward(self, x):
        fx = (self.linear(x) + self.f(x)).squeeze(-1)
        log_mu = self.bias_mu + fx
        gx = self.g(torch.cat([x, fx.unsqueeze(-1)], dim=-1)).squeeze(-1)
        log_r = (self.bias_r + gx).clamp(LOG_R_MIN, LOG_R_MAX)
        return log_mu, log_r


class TechnicalRP(TechnicalNet):
    """``r`` and ``p`` from ``x`` independently; ``μ = r·p/(1−p)``."""

    def __init__(self, n_covariates, log_mean, n_hidden=32, n_layers=2, covariates=None):
        super().__init__(n_covariates, log_mean, n_hidden, n_layers)
        self.net = MLP(n_covariates, 2, self.hidden, zero_last=True)

    def forward(self, x):
        out = self.net(x)
        log_r = (self.bias_r + out[..., 1]).clamp(LOG_R_MIN, LOG_R_MAX)
        # logit p starts at log_mean - log_r so that the initial mean equals log_mean.
        logit_p = self.bias_mu - self.bias_r.detach() + out[..., 0] + self.linear(x).squeeze(-1)
        return log_r + logit_p, log_r


#: Control covariates of :class:`TechnicalControlSlope` (log1p of the depth-scaled control count
#: over 1, 5 and 51 bins), in the order of its window weights.
CONTROL_WINDOWS = ("log_control", "log_control_1kb", "log_control_10kb")


class TechnicalControlSlope(TechnicalNet):
    """Input-proportional technical mean with a bounded slope (MACS3's local lambda, learned)::

        log μ_ij = b_j + β_j · log((c̃_ij + λ_j) / (c_ref + λ_j)) + f(x_other)
        c̃_ij   = Σ_k w_k · c_ij^(k)     control scaled to library j's depth, 1/5/51-bin windows
        log r_ij = d_j + g(x, log μ_ij − b_j)

    with ``β_j ∈ (0, 1)``, ``λ_j > 0`` (a background floor, as MACS3's ``λ_bg``) and window
    weights ``w`` on the simplex, all learned; ``f`` is an MLP of the covariates other than the
    control counts (MAPQ, depths) and ``g`` of all of them.

    Why bounded: the ChIP background of a bin is at most proportional to its input. An
    unconstrained network of the control counts can be steeper than that, and where the
    input is higher at the very sites the mark occupies (open promoters for H3K4me3) it
    explains the peaks as technical: on 10 %-thinned ENCODE libraries its technical mean
    spanned 100-fold over a 2-fold range of input and the enrichment ranked bins worse than
    raw counts (``benchmarks/log/2026-12-07-control-slope.md``).
    """

    def __init__(self, n_covariates, log_mean, n_hidden=32, n_layers=2, covariates=None):
        super().__init__(n_covariates, log_mean, n_hidden, n_layers)
        if covariates is None:
            raise ValueError("technical='control_slope' needs the covariate builder.")
        del self.linear  # the control enters through the slope; f sees the other covariates
        n_lib = log_mean.numel()
        self.slope_logit = nn.Parameter(torch.full((n_lib,), 2.0))  # β starts at 0.88
        self.floor_logit = nn.Parameter(torch.zeros(n_lib))
        self.window_logits = nn.Parameter(torch.zeros(len(CONTROL_WINDOWS)))
        self.g = MLP(n_covariates + 1, 1, self.hidden, zero_last=True)
        self.f: MLP | None = None
        names = covariates.names
        missing = [c for c in CONTROL_WINDOWS if c not in names]
        if missing:
            raise ValueError(
                f"technical='control_slope' needs the covariates {CONTROL_WINDOWS}; the "
                f"covariate set lacks {missing}."
            )
        control = [names.index(c) for c in CONTROL_WINDOWS]
        other = [i for i in range(len(names)) if i not in control]
        self.register_buffer("control_columns", torch.tensor(control), persistent=False)
        self.register_buffer("other_columns", torch.tensor(other), persistent=False)
        if other:
            self.f = MLP(len(other), 1, self.hidden, zero_last=True)
        # The builder is the parent module's child: kept as a plain reference, not a submodule
        # (its buffers are saved and moved once, with the parent).
        object.__setattr__(self, "_builder", covariates)

    def slope(self) -> torch.Tensor:
        """β_j, the exponent of the input in the technical mean."""
        return torch.sigmoid(self.slope_logit)

    def forward(self, x):
        b = self._builder
        cols = self.control_columns
        raw = x[..., cols] * b.scale[cols] + b.loc[cols]  # log1p of scaled control, 3 widths
        counts = torch.expm1(raw).clamp(min=0)
        control = (counts * torch.softmax(self.window_logits, 0)).sum(-1)
        # Reference: the typical (geometric mean) scaled control of the widest window, so
        # b_j stays the log mean count at the start and λ_j has the data's scale.
        ref = torch.expm1(b.loc[cols[-1]]).clamp(min=1e-6)
        floor = F.softplus(self.floor_logit) * ref + 1e-8
        fx = self.slope() * (torch.log(control + floor) - torch.log(ref + floor))
        if self.f is not None:
            fx = fx + self.f(x[..., self.other_columns]).squeeze(-1)
        log_mu = self.bias_mu + fx
        gx = self.g(torch.cat([x, fx.unsqueeze(-1)], dim=-1)).squeeze(-1)
        log_r = (self.bias_r + gx).clamp(LOG_R_MIN, LOG_R_MAX)
        return log_mu, log_r
