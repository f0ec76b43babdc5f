"""The one small protocol every frozen vision encoder follows: pixels (N, c, h, w) → features (N, v, d).

Flamingo only needs a grid of features per image; which network produced them is a detail. Every adapter
(:mod:`~flamingo_vlm.model.vision`, :mod:`~flamingo_vlm.model.nfnet`, :mod:`~flamingo_vlm.model.efficientnet`)
exposes the same attributes (feature width, input size, normalisation), so that the resampler, the processor
and save/load never look inside the encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

HALF = (0.5, 0.5, 0.5)


class VisionEncoder(nn.Module):
    """Base class of the adapters: what the rest of flamingo_vlm may rely on."""

    hidden_size: int  # d, the feature width
    image_size: int  # square input resolution
    num_channels: int = 3
    image_mean: tuple[float, ...] = HALF
    image_std: tuple[float, ...] = HALF
    reference: str = ""  # how to load it again (path or hub id); "" when built in memory

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, c, h, w) → (N, v, d)
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")
