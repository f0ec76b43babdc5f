"""Frozen vision encoders behind one small protocol: pixels (N, c, h, w) → features (N, v, d).

Flamingo only needs a grid of features per image; which network produced them is a detail. The
adapters below expose the same attributes (feature width, input size, normalisation) so that the
resampler, the processor and save/load never look inside the encoder.

- :class:`HFVisionTower`: a Hugging Face CLIP or SigLIP vision tower (patch tokens, no CLS).
- :class:`NFNetEncoder`: a small normaliser-free ResNet (the paper's encoder family: scaled weight
  standardisation, no batch norm), trainable from scratch and saved as a directory.
- :class:`TimmVisionEncoder`: any timm backbone (e.g. ``timm:nfnet_f0``) when timm is installed.
- :class:`~flamingo_vlm.model.efficientnet.EfficientNetLiteEncoder`: ImageNet EfficientNet-Lite0/1/2 from
  installed weights packages (spec ``"efficientnet-lite0"``), a real pretrained encoder offline.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from flamingo_vlm.io import save_safetensors, write_text

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
NFNET_MODEL_TYPE = "flamingo_nfnet"


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


def _write_preprocessor_config(directory: Path, size: int, mean, std) -> None:
    config = {"image_mean": list(mean), "image_std": list(std), "size": {"height": size, "width": size}}
    write_text(json.dumps(config, indent=2) + "\n", directory / "preprocessor_config.json")


def _read_normalisation(directory: Path, default_mean, default_std) -> tuple[tuple, tuple]:
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return default_mean, default_std
    config = json.loads(path.read_text())
    return tuple(config.get("image_mean", default_mean)), tuple(config.get("image_std", default_std))


class HFVisionTower(VisionEncoder):
    """A transformers CLIP/SigLIP vision model; returns the final patch tokens, without CLS."""

    def __init__(self, model: nn.Module, *, drop_cls: bool, image_mean=HALF, image_std=HALF, reference: str = ""):
        super().__init__()
        self.model = model
        self.drop_cls = drop_cls
        config = model.config
        self.hidden_size = config.hidden_size
        self.image_size = config.image_size
        self.num_channels = config.num_channels
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.reference = reference

    @classmethod
    def from_pretrained(cls, path: str, model_type: str) -> HFVisionTower:
        from transformers import CLIPVisionModel, SiglipVisionModel

        is_clip = model_type.startswith("clip")
        model = (CLIPVisionModel if is_clip else SiglipVisionModel).from_pretrained(path)
        defaults = (CLIP_MEAN, CLIP_STD) if is_clip else (HALF, HALF)
        mean, std = _read_normalisation(Path(path), *defaults) if Path(path).is_dir() else defaults
        return cls(model, drop_cls=is_clip, image_mean=mean, image_std=std, reference=str(path))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.model(pixel_values=pixels).last_hidden_state  # (N, 1 + v or v, d)
        return tokens[:, 1:] if self.drop_cls else tokens

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
        _write_preprocessor_config(Path(directory), self.image_size, self.image_mean, self.image_std)


# ----------------------------------------------------------------------------------------------
# NFNet-style encoder (Brock et al., 2021): residual blocks without batch norm. Signal variance is
# kept in check analytically: each residual branch sees its input divided by the expected std β,
# its output is scaled by α, and convolutions use scaled weight standardisation.


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
            raise ValueError(f"image_size {self.image_size} must be a multiple of {stride} for {len(self.widths)} stages")


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
        # few sparse 3×3 windows (ShapesWorld, 250 contrastive steps: linear-probe accuracy of
        # a shape's position from mean-pooled features 0.69 at gain 0, 0.98 at gain 1).
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
                expected_var = 1.0 + config.alpha**2 if blocks[-1].shortcut is not None else expected_var + config.alpha**2
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
        config = json.loads((path / "config.json").read_text())
        config.pop("model_type")
        model = cls(NFNetConfig(**config), reference=str(path))
        model.load_state_dict(load_file(path / "model.safetensors"))
        return model


class TimmVisionEncoder(VisionEncoder):
    """A timm backbone (pretrained weights from timm's own cache); features are its last feature map."""

    def __init__(self, name: str) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as err:  # timm is optional: it pulls in torchvision
            raise ImportError(f"vision encoder 'timm:{name}' needs timm: pip install 'flamingo-vlm[timm]'") from err
        self.model = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
        data = self.model.pretrained_cfg
        self.hidden_size = self.model.num_features
        self.image_size = data["input_size"][-1]
        self.num_channels = data["input_size"][0]
        self.image_mean, self.image_std = tuple(data["mean"]), tuple(data["std"])
        self.reference = f"timm:{name}"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.model.forward_features(pixels)  # (N, d, h', w') for CNNs, (N, v, d) for ViTs
        return x.flatten(2).transpose(1, 2) if x.ndim == 4 else x


def encoder_fingerprint(vision: nn.Module) -> str:
    """Hash of an encoder's class and weights: features cached for one encoder are never reused for another."""
    import hashlib

    digest = hashlib.sha256(type(vision).__qualname__.encode())
    for name, tensor in sorted(vision.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


_HF_TYPES = {"clip", "clip_vision_model", "siglip", "siglip_vision_model"}


def load_vision_encoder(spec: str | nn.Module) -> VisionEncoder:
    """Resolve a vision spec: an adapter, ``timm:NAME``, ``efficientnet-lite{0,1,2}``, a directory, or a hub id."""
    # Imported here: the EfficientNet adapter subclasses VisionEncoder, defined above.
    from flamingo_vlm.model.efficientnet import EFFICIENTNET_MODEL_TYPE, EFFICIENTNET_VARIANTS, EfficientNetLiteEncoder

    if isinstance(spec, VisionEncoder):
        return spec
    if isinstance(spec, nn.Module):
        config = getattr(spec, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type in _HF_TYPES:
            is_clip = model_type.startswith("clip")
            mean, std = (CLIP_MEAN, CLIP_STD) if is_clip else (HALF, HALF)
            return HFVisionTower(spec, drop_cls=is_clip, image_mean=mean, image_std=std)
        raise ValueError(
            f"unknown vision module {type(spec).__name__}: wrap it in a flamingo_vlm.model.vision.VisionEncoder "
            "(hidden_size, image_size, image_mean, image_std, forward(pixels (N,c,h,w)) -> (N, v, d))"
        )
    if not isinstance(spec, (str, Path)):
        raise ValueError(f"unknown vision encoder spec of type {type(spec).__name__}")
    spec = str(spec)
    if spec.startswith("timm:"):
        return TimmVisionEncoder(spec.removeprefix("timm:"))
    if spec in EFFICIENTNET_VARIANTS:
        return EfficientNetLiteEncoder.from_package(spec)
    config_path = Path(spec) / "config.json"
    if config_path.is_file():
        model_type = json.loads(config_path.read_text()).get("model_type")
    else:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(spec).model_type
        except (OSError, ValueError) as err:
            raise ValueError(
                f"unknown vision encoder spec {spec!r}: expected a directory with a config.json (CLIP, SigLIP, "
                f"{NFNET_MODEL_TYPE} or {EFFICIENTNET_MODEL_TYPE}), a reachable hub id, 'timm:<name>', "
                f"{', '.join(map(repr, EFFICIENTNET_VARIANTS))}, or a VisionEncoder module"
            ) from err
    if model_type == NFNET_MODEL_TYPE:
        return NFNetEncoder.from_pretrained(spec)
    if model_type == EFFICIENTNET_MODEL_TYPE:
        return EfficientNetLiteEncoder.from_pretrained(spec)
    if model_type in _HF_TYPES:
        return HFVisionTower.from_pretrained(spec, model_type)
    raise ValueError(
        f"vision encoder {spec!r} has model_type {model_type!r}; supported: clip, siglip, {NFNET_MODEL_TYPE}, "
        f"{EFFICIENTNET_MODEL_TYPE}, timm:<name>"
    )
