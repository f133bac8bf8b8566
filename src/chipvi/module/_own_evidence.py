"""Each library's own evidence: its enrichment posterior from its own reads only.

The shared-biology posterior (the guide) borrows strength from a library's replicates, so a
shallow library's output follows what its replicates show even where it lacks a feature.
This posterior uses one library's counts, the learned technical NB (μ, r, mappability weight)
and the learned prior of the enrichment, with no replicate in it, so replicate concordance of
these outputs compares independent estimates.

Enrichment is modelled as piecewise constant along a chromosome (peaks and domains span runs
of bins): from one bin to the next it stays with probability :data:`STAY`, otherwise it is
drawn afresh from the prior. The posterior of every bin is exact on a grid of log fold
enrichments (forward-backward over the grid; the transition is "stay or redraw", so a step
costs O(grid), not O(grid²)). Bins without usable reads (mappability weight ≈ 0) take their
neighbours' evidence through the chain. Memory: the forward pass keeps bins × grid float32
per chromosome (1 GB for human chr1 in 200 bp bins).
"""

from __future__ import annotations

import numba
import numpy as np

#: Log fold enrichments the posterior is evaluated on (natural log), step 0.05.
GRID = np.linspace(-4.0, 6.0, 201)
#: Probability that the enrichment of a bin equals that of the previous bin (mean run of
#: 1 / (1 - STAY) = 5 bins, 1 kb at 200 bp). The only value measured (benchmarks/RESULTS.md).
STAY = 0.8


def own_evidence_posterior(
    counts: np.ndarray,
    log_mu: np.ndarray,
    log_r: np.ndarray,
    weight: np.ndarray,
    log_prior: np.ndarray,
    lower_quantile: float,
    stay: float = STAY,
) -> dict[str, np.ndarray]:
    """Posterior of each library's log fold enrichment along one chromosome, own reads only.

    Parameters
    ----------
    counts, log_mu, log_r
        ``(bins, libraries)`` of one chromosome, in genomic order: counts and the technical
        NB's log mean and log dispersion.
    weight
        ``(bins,)`` mappability likelihood weight (0: multi-mapper pile-up, no evidence).
    log_prior
        ``(len(GRID),)`` log prior density of the log fold enrichment on :data:`GRID`.
    lower_quantile
        Quantile returned as ``"lower"``.
    stay
        Probability that the enrichment carries over to the next bin.

    Returns
    -------
    ``mean``, ``sd`` and ``lower`` (the quantile), each ``(bins, libraries)`` float64.
    """
    prior = np.exp(log_prior - log_prior.max())
    prior /= prior.sum()
    out = {k: np.empty(counts.shape) for k in ("mean", "sd", "lower")}
    for j in range(counts.shape[1]):
        _forward_backward(
            np.ascontiguousarray(counts[:, j], np.float64),
            np.ascontiguousarray(log_mu[:, j], np.float64),
            np.ascontiguousarray(log_r[:, j], np.float64),
            np.ascontiguousarray(weight, np.float64),
            GRID,
            prior,
            float(stay),
            float(lower_quantile),
            out["mean"][:, j],
            out["sd"][:, j],
            out["lower"][:, j],
        )
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _emission(y, log_mu, log_r, w, grid, e):
    """``e[g] ∝ exp(w · log NB-kernel(y | exp(log_mu + grid[g]), exp(log_r)))``, max 1.

    The kernel is :func:`chipvi.module._nb._log_kernel` for one count, written again in numba
    so that the backward pass recomputes a bin's emissions instead of storing bins × grid
    of them next to the forward pass's.
    """
    r = np.exp(log_r)
    top = -np.inf
    for g in range(grid.size):
        lm = log_mu + grid[g]
        # log(r + mu) without overflow
        big = max(log_r, lm)
        log_sum = big + np.log(np.exp(log_r - big) + np.exp(lm - big))
        e[g] = w * (r * (log_r - log_sum) + y * (lm - log_sum))
        top = max(top, e[g])
    for g in range(grid.size):
        e[g] = np.exp(e[g] - top)


@numba.njit(cache=True, nogil=True)
def _forward_backward(y, log_mu, log_r, w, grid, prior, stay, q, mean, sd, lower):
    n, n_grid = y.size, grid.size
    alpha = np.empty((n, n_grid), np.float32)
    e = np.empty(n_grid)
    a = np.empty(n_grid)
    for i in range(n):
        _emission(y[i], log_mu[i], log_r[i], w[i], grid, e)
        total = 0.0
        for g in range(n_grid):
            carried = prior[g] if i == 0 else stay * a[g] + (1.0 - stay) * prior[g]
            a[g] = carried * e[g]
            total += a[g]
        for g in range(n_grid):
            a[g] /= total
            alpha[i, g] = a[g]
    beta = np.full(n_grid, 1.0 / n_grid)
    post = np.empty(n_grid)
    for i in range(n - 1, -1, -1):
        total = 0.0
        for g in range(n_grid):
            post[g] = alpha[i, g] * beta[g]
            total += post[g]
        m = 0.0
        for g in range(n_grid):
            post[g] /= total
            m += post[g] * grid[g]
        v = 0.0
        cdf = 0.0
        k = 0
        for g in range(n_grid):
            v += post[g] * (grid[g] - m) ** 2
            cdf += post[g]
            if cdf < q:
                k = g + 1
        mean[i], sd[i], lower[i] = m, np.sqrt(v), grid[min(k, n_grid - 1)]
        if i > 0:
            # beta_{i-1}(g) = sum_h T(g -> h) e_i(h) beta_i(h), T = stay·I + (1 - stay)·prior
            _emission(y[i], log_mu[i], log_r[i], w[i], grid, e)
            redraw = 0.0
            for g in range(n_grid):
                e[g] *= beta[g]
                redraw += prior[g] * e[g]
            total = 0.0
            for g in range(n_grid):
                beta[g] = stay * e[g] + (1.0 - stay) * redraw
                total += beta[g]
            for g in range(n_grid):
                beta[g] /= total
