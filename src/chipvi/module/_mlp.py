"""The one fully connected building block used by every network in chipvi."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected network: ``Linear → LayerNorm → activation`` per hidden layer.

    Parameters
    ----------
    n_input
        Size of the last input axis.
    n_output
        Size of the last output axis.
    n_hidden
        Width of each hidden layer (``()`` gives a single linear map).
    dropout
        Dropout rate after each hidden activation.
    zero_last
        Initialise the output layer at zero, so a freshly built network predicts its bias (used
        for residual corrections that should start neutral).
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_hidden: Sequence[int] = (32, 32),
        dropout: float = 0.0,
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_input
        for hidden in n_hidden:
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        last = nn.Linear(width, n_output)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network to the last axis of ``x``."""
        return self.net(x)
