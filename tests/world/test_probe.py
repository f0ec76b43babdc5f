"""The vision probe reads what features hold, and nothing that they do not."""

import numpy as np
import torch
from torch import nn

from flamingo_vlm.world.probe import PROBED, vision_probe
from flamingo_vlm.world.scene import COLOURS, RenderConfig

CONFIG = RenderConfig(image_size=32)
PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255  # (k, 3)


def to_tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)  # (3, h, w)


class ColourDetector(nn.Module):
    """Each saturated pixel is a one-hot token of its nearest palette colour; grey pixels are zero."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, c, h, w) -> (N, h·w, k)
        rgb = pixels.flatten(2).transpose(1, 2)  # (N, h·w, 3)
        nearest = torch.cdist(rgb, PALETTE.expand(len(rgb), -1, -1)).argmin(-1)  # (N, h·w)
        saturated = (rgb.amax(-1) - rgb.amin(-1)) > 0.25
        return self.scale * nn.functional.one_hot(nearest, len(PALETTE)).float() * saturated.unsqueeze(-1)


class Constant(ColourDetector):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(pixels), 4, 8) * self.scale


def test_colour_features_reveal_colour():
    result = vision_probe(ColourDetector(), to_tensor, CONFIG, seed=0, num_scenes=300)
    assert set(result) == set(PROBED)
    assert result["colour"]["accuracy"] > 0.9 and result["colour"]["chance"] == 1 / 6


def test_constant_features_reveal_nothing():
    result = vision_probe(Constant(), to_tensor, CONFIG, seed=0, num_scenes=300)
    for kind, r in result.items():
        assert r["accuracy"] < r["chance"] + 0.15, kind
