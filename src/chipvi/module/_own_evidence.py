"""Each library's own evidence: its enrichment posterior from its own reads only.

The shared-biology posterior (the guide) borrows strength from a library's replicates, so a
shallow library's output follows what its replicates show even where it lacks a feature.
This posterior uses one library's counts, the learned technical NB (μ, r, mappability weight)
and the learned prior of the enrichment, with no replicate in it: replicate concordance of
these outputs compares independent estimates. It is exact on a grid of log fold enrichments.
"""

from __future__ import annotations

import torch

from ._nb import _log_kernel

#: Log fold enrichments the posterior is evaluated on (natural log), step 0.05.
GRID = torch.linspace(-4.0, 6.0, 201)


def own_evidence_posterior(
    counts: torch.Tensor,
    log_mu: torch.Tensor,
    log_r: torch.Tensor,
    weight: torch.Tensor,
    same_chrom: torch.Tensor,
    log_prior: torch.Tensor,
    lower_quantile: float,
) -> dict[str, torch.Tensor]:
    """Posterior of each library's log fold enrichment given its own counts.

    Parameters
    ----------
    counts, log_mu, log_r
        ``(bins, libraries)``: counts and the technical NB's log mean and log dispersion.
    weight
        ``(bins,)`` mappability likelihood weight (0: multi-mapper pile-up, no evidence).
    same_chrom
        ``(bins - 1,)`` bool: bin ``i + 1`` is on the chromosome of bin ``i``. A bin's
        enrichment is read from its own and its two neighbours' counts, never across a
        chromosome end (a fragment spans 1-2 bins of 200 bp; on the simulator ±1 bin gave
        the best AUPRC for the shallow replicate of ±0, 1 and 2 bins, ±0 for the deep one;
        ``benchmarks/RESULTS.md``).
    log_prior
        ``(len(GRID),)`` log prior density of the log fold enrichment on :data:`GRID`.
    lower_quantile
        Quantile returned as ``"lower"``.

    Returns
    -------
    ``mean``, ``sd`` and ``lower`` (the quantile), each ``(bins, libraries)``.
    """
    grid = GRID.to(log_mu)
    # Log-likelihood of every grid value, (bins, libraries, grid). The lgamma terms do not
    # depend on the enrichment and cancel in the normalisation.
    ll = _log_kernel(counts[..., None], log_mu[..., None] + grid, log_r[..., None])
    ll = ll * weight[:, None, None]
    # The two neighbouring bins' reads count too (same chromosome only).
    pooled = ll.clone()
    link = same_chrom.to(ll)[:, None, None]
    pooled[1:] += ll[:-1] * link
    pooled[:-1] += ll[1:] * link
    log_post = pooled + log_prior.to(ll)
    post = torch.softmax(log_post, dim=-1)
    mean = (post * grid).sum(-1)
    sd = ((post * (grid - mean[..., None]) ** 2).sum(-1)).clamp_min(0).sqrt()
    cdf = post.cumsum(-1)
    lower = grid[(cdf < lower_quantile).sum(-1).clamp_max(len(grid) - 1)]
    return {"mean": mean, "sd": sd, "lower": lower}
