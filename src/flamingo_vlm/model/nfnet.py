"""NFNet-style vision encoder (Brock et al., 2021), the paper's encoder family, small enough to pretrain.

Residual blocks without batch norm: signal variance is kept in check analytically. Each residual
branch sees its input divided by the expected std β, its output is scaled by α, and convolutions
use scaled weight standardisation. Saved as a directory (``config.json`` with ``model_type``
``flamingo_nfnet`` and ``model.safetensors``) that :func:`~flamingo_vlm.model.vision.load_vision_encoder`
recognises.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flamingo_vlm.io import load_tensors, read_json, save_safetensors, write_text
from flamingo_vlm.model.vision_encoder import HALF, VisionEncoder

NFNET_MODEL_TYPE = "flamingo_nfnet"


@dataclass
class NFNetConfig:
    image_size: int = 64
    num_channels: int = 3
    stem_width: int = 32
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 1, 1, 1)
    hidden_size: int = 256  # output feature width (a 1×1 projection of the last stage)
    alpha: float = 0.2
    image_mean: tuple[float, ...] = HALF
    image_std: tuple[float, ...] = HALF

    def __post_init__(self) -> None:
        self.widths, self.depths = tuple(self.widths), tuple(self.depths)
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        if len(self.widths) != len(self.depths):
            raise ValueError(f"widths {self.widths} and depths {self.depths} must have the same length")
        stride = 2 ** (len(self.widths) + 1)
        if self.image_size % stride:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of {stride} for {len(self.widths)} stages"
            )


_GAMMA_GELU = 1.7015043497085571  # std of gelu(x) for x ~ N(0, 1) is 1/γ


class ScaledStdConv2d(nn.Conv2d):
    """Conv2d whose weights are standardised per output channel and scaled by a learned gain."""

    def __init__(self, *args, eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fan_in = self.weight[0].numel()
        mean = self.weight.mean(dim=(1, 2, 3), keepdim=True)
        var = self.weight.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) * torch.rsqrt(var * fan_in + self.eps) * self.gain
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


class NFBlock(nn.Module):
    """x + α·f(x/β): pre-activation basic block; a strided block projects the shortcut too."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.conv1 = ScaledStdConv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.conv2 = ScaledStdConv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = ScaledStdConv2d(in_ch, out_ch, 1, stride=stride) if stride != 1 or in_ch != out_ch else None
        # A learned branch gain, started at 1 rather than NFNet's SkipInit 0: at gain 0 a small,
        # briefly trained encoder is its strided 1×1 shortcuts, which see each image through a
        # few sparse 3×3 windows and lose where things are in it.
        self.skip_gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.gelu(x / self.beta) * _GAMMA_GELU
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.gelu(out) * _GAMMA_GELU)
        return shortcut + self.alpha * self.skip_gain * out


class NFNetEncoder(VisionEncoder):
    def __init__(self, config: NFNetConfig, reference: str = "") -> None:
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.image_size = config.image_size
        self.num_channels = config.num_channels
        self.image_mean, self.image_std = config.image_mean, config.image_std
        self.reference = reference
        self.stem = ScaledStdConv2d(config.num_channels, config.stem_width, 3, stride=2, padding=1)
        blocks, in_ch, expected_var = [], config.stem_width, 1.0
        for width, depth in zip(config.widths, config.depths):
            for i in range(depth):
                beta = math.sqrt(expected_var)
                blocks.append(NFBlock(in_ch, width, 2 if i == 0 else 1, config.alpha, beta))
                # A projected shortcut resets the variance; an identity one accumulates α².
                expected_var = (
                    1.0 + config.alpha**2 if blocks[-1].shortcut is not None else expected_var + config.alpha**2
                )
                in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Conv2d(in_ch, config.hidden_size, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(pixels))  # (N, C, h', w')
        x = self.proj(F.gelu(x) * _GAMMA_GELU)  # (N, d, h', w')
        return x.flatten(2).transpose(1, 2)  # (N, h'·w', d)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        config = {"model_type": NFNET_MODEL_TYPE, **asdict(self.config)}
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.state_dict(), directory / "model.safetensors")
        write_text(json.dumps(config, indent=2) + "\n", directory / "config.json")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> NFNetEncoder:
        path = Path(path)
        config = read_json(path / "config.json")
        config.pop("model_type")
        model = cls(NFNetConfig(**config), reference=str(path))
        model.load_state_dict(load_tensors(path / "model.safetensors"))
        return model
