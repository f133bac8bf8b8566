"""Negative Binomial parameterised by mean and dispersion, numerically stable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints

_EMPTY = torch.Size()


def nb_log_prob(y: torch.Tensor, log_mu: torch.Tensor, log_r: torch.Tensor) -> torch.Tensor:
    """Log-probability of counts under NB(mean ``exp(log_mu)``, dispersion ``exp(log_r)``).

    ``Var = mu + mu**2 / r``. Works in log space (softplus of ``log(mu / r)``, lgamma terms
    in float64), so tiny ``r``, huge counts and zero counts neither overflow nor lose precision.

    Parameters
    ----------
    y
        Non-negative counts (float tensor).
    log_mu
        Log mean, broadcastable to ``y``.
    log_r
        Log dispersion (inverse overdispersion), broadcastable to ``y``.
    """
    return _log_comb(y, log_mu, log_r) + _log_kernel(y, log_mu, log_r)


def _log_comb(y, log_mu, log_r) -> torch.Tensor:
    """``lgamma(y + r) - lgamma(r) - lgamma(y + 1)`` in the promoted dtype."""
    dtype = torch.promote_types(torch.promote_types(y.dtype, log_mu.dtype), log_r.dtype)
    # The three lgamma terms are large and nearly cancel for big counts or big r: float32
    # loses ~0.05 nats there, so they are evaluated in float64.
    y64, r64 = y.double(), log_r.exp().double()
    return (torch.lgamma(y64 + r64) - torch.lgamma(r64) - torch.lgamma(y64 + 1.0)).to(dtype)


def _log_kernel(y, log_mu, log_r) -> torch.Tensor:
    """``r·log(r / (r + mu)) + y·log(mu / (r + mu))``."""
    # Both logs as softplus of the log ratio: no cancellation when mu >> r or r >> mu.
    log_ratio = log_mu - log_r
    return -log_r.exp() * F.softplus(log_ratio) - y * F.softplus(-log_ratio)


class NegativeBinomialMeanDisp(TorchDistribution):
    """NB distribution with ``mean = exp(log_mu)`` and dispersion ``r = exp(log_r)`` for Pyro.

    Sampling is Gamma–Poisson (not reparameterised; counts are observed in chipvi).
    """

    arg_constraints = {"log_mu": constraints.real, "log_r": constraints.real}
    support = constraints.nonnegative_integer
    has_rsample = False

    def __init__(self, log_mu: torch.Tensor, log_r: torch.Tensor, validate_args=None) -> None:
        self.log_mu, self.log_r = torch.broadcast_tensors(log_mu, log_r)
        super().__init__(self.log_mu.shape, validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.log_mu.exp()

    @property
    def variance(self) -> torch.Tensor:
        mu = self.log_mu.exp()
        return mu + mu**2 / self.log_r.exp()

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return NegativeBinomialMeanDisp(
            self.log_mu.expand(batch_shape), self.log_r.expand(batch_shape)
        )

    def sample(self, sample_shape=_EMPTY):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            r = self.log_r.exp().expand(shape)
            rate = torch.distributions.Gamma(r, r / self.log_mu.exp().expand(shape)).sample()
            return torch.poisson(rate)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return nb_log_prob(value, self.log_mu, self.log_r)
