"""Replicate-consistency terms: ``pyro.factor`` terms on the replicates' gains.

The replicates of a group share one enrichment chain, so their biology agrees by
construction; what can still differ is how strongly each library sees it (its gain ``a_j``,
IP efficiency). A consistency term is a log-factor on the libraries' log gains that favours
replicates seeing the shared features equally strongly unless their counts say otherwise.
Each term takes the log gains ``(libraries,)`` and the groups (tuples of library indices)
and returns a scalar (larger = more consistent); groups of one library contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def mse_consistency(log_gain: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Minus the summed squared differences of log gains between replicates of a group."""
    total = log_gain.new_zeros(())
    for members in groups:
        idx = list(members)
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                total = total - (log_gain[idx[a]] - log_gain[idx[b]]) ** 2
    return total
