"""Per-channel input normalisation that lives inside the model.

The published scripts used advertorch's ``NormalizeByChannelMeanStd``; advertorch no
longer imports with current torch, so this is our own layer with the same buffer names
(``mean`` and ``std``, shape (3,)) so that checkpoints move both ways.
"""
from typing import Sequence

import torch
from torch import nn


class NormalizeByChannelMeanStd(nn.Module):
    """Computes ``(x - mean) / std`` per channel for inputs in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"
