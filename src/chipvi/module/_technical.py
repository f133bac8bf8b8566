"""Technical networks: per-bin, per-library NB mean and dispersion from covariates only."""

from __future__ import annotations

import torch
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
    """

    def __init__(self, n_covariates: int, log_mean: torch.Tensor, n_hidden: int, n_layers: int):
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

    def __init__(self, n_covariates, log_mean, n_hidden=32, n_layers=2):
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

    def __init__(self, n_covariates, log_mean, n_hidden=32, n_layers=2):
        super().__init__(n_covariates, log_mean, n_hidden, n_layers)
        self.net = MLP(n_covariates, 2, self.hidden, zero_last=True)

    def forward(self, x):
        out = self.net(x)
        log_r = (self.bias_r + out[..., 1]).clamp(LOG_R_MIN, LOG_R_MAX)
        # logit p starts at log_mean - log_r so that the initial mean equals log_mean.
        logit_p = self.bias_mu - self.bias_r.detach() + out[..., 0] + self.linear(x).squeeze(-1)
        return log_r + logit_p, log_r
