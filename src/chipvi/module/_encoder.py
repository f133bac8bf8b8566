"""Amortised encoder of the guide: dilated 1-D convolutions over neighbouring bins."""

from __future__ import annotations

import torch
from torch import nn

#: Dilations of the kernel-5 convolution stack; the receptive field is ±2·sum(dilations) bins.
DILATIONS = (1, 3, 9)
ENCODER_CONTEXT = 2 * sum(DILATIONS)


class WindowEncoder(nn.Module):
    """Encode each library's evidence in a window of consecutive bins.

    Weights are shared across libraries (libraries are the convolution batch axis), so one
    encoder serves any number of replicates.

    Parameters
    ----------
    n_input
        Features per bin and library.
    n_hidden
        Channels of the convolutions.
    window
        Use the convolutional context; ``False`` gives a per-bin (pointwise) encoder, the
        baseline the benchmark compares against.
    """

    def __init__(self, n_input: int, n_hidden: int = 32, window: bool = True) -> None:
        super().__init__()
        self.window = window
        layers: list[nn.Module] = []
        width = n_input
        for dilation in DILATIONS:
            kernel = 5 if window else 1
            pad = 2 * dilation if window else 0
            layers += [
                nn.Conv1d(width, n_hidden, kernel, dilation=dilation, padding=pad),
                nn.SiLU(),
            ]
            width = n_hidden
        self.conv = nn.Sequential(*layers)
        self.n_output = n_hidden + n_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(bins, libraries, n_input)`` → ``(bins, libraries, n_hidden + n_input)``."""
        h = self.conv(x.permute(1, 2, 0)).permute(2, 0, 1)
        return torch.cat([h, x], dim=-1)
