"""Replicate-consistency terms, used as ``pyro.factor`` inside the bins plate.

Each term takes the library-level log fold enrichment ``lfe`` (bins × libraries) of a minibatch
of bins and the replicate groups (index tensors of the libraries of each group with two or more
replicates), and returns one log-factor per bin (larger = more consistent).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _pairs(groups: Sequence[torch.Tensor]):
    for members in groups:
        n = len(members)
        for a in range(n):
            for b in range(a + 1, n):
                yield members[a], members[b]


def mse_consistency(lfe: torch.Tensor, groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """Minus the mean squared difference between replicates, per bin."""
    terms = [-((lfe[:, a] - lfe[:, b]) ** 2) for a, b in _pairs(groups)]
    return torch.stack(terms, 0).mean(0)


def pearson_consistency(lfe: torch.Tensor, groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pearson correlation between replicates over the minibatch, spread evenly over its bins."""
    centred = lfe - lfe.mean(0, keepdim=True)
    norm = centred.pow(2).sum(0).add(1e-6).sqrt()
    terms = [(centred[:, a] * centred[:, b]).sum() / (norm[a] * norm[b]) for a, b in _pairs(groups)]
    return torch.stack(terms).mean().expand(lfe.shape[0])
