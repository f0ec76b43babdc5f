"""The pre-norm feed-forward layer shared by the resampler and the gated cross-attention blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flamingo_vlm.config import Activation


class SquaredReLU(nn.Module):
    """relu(x)², the activation the paper uses in its new layers (from Primer, So et al. 2021)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def make_activation(name: Activation) -> nn.Module:
    if name == "squared_relu":
        return SquaredReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'squared_relu' or 'gelu'")


class FeedForward(nn.Sequential):
    """LayerNorm → Linear(d, mult·d) → activation → Linear(mult·d, d), no biases (as in the paper)."""

    def __init__(self, dim: int, mult: int = 4, activation: Activation = "squared_relu") -> None:
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * mult, bias=False),
            make_activation(activation),
            nn.Linear(dim * mult, dim, bias=False),
        )
