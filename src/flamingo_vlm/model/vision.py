"""Frozen vision encoders: the adapters behind :class:`~flamingo_vlm.model.vision_encoder.VisionEncoder`, and
:func:`load_vision_encoder`, which resolves a spec to one of them.

- :class:`HFVisionTower`: a Hugging Face CLIP or SigLIP vision tower (patch tokens, no CLS).
- :class:`~flamingo_vlm.model.nfnet.NFNetEncoder`: a small normaliser-free ResNet (the paper's encoder
  family: scaled weight standardisation, no batch norm), trainable from scratch and saved as a directory.
- :class:`TimmVisionEncoder`: any timm backbone (e.g. ``timm:nfnet_f0``) when timm is installed.
- :class:`~flamingo_vlm.model.efficientnet.EfficientNetLiteEncoder`: ImageNet EfficientNet-Lite0/1/2 from
  installed weights packages (spec ``"efficientnet-lite0"``), a real pretrained encoder offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from flamingo_vlm.io import pickled_weights_refused, read_json, write_text
from flamingo_vlm.model.efficientnet import EFFICIENTNET_MODEL_TYPE, EFFICIENTNET_VARIANTS, EfficientNetLiteEncoder
from flamingo_vlm.model.nfnet import NFNET_MODEL_TYPE, NFNetEncoder
from flamingo_vlm.model.vision_encoder import HALF, VisionEncoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _write_preprocessor_config(directory: Path, size: int, mean, std) -> None:
    config = {"image_mean": list(mean), "image_std": list(std), "size": {"height": size, "width": size}}
    write_text(json.dumps(config, indent=2) + "\n", directory / "preprocessor_config.json")


def _read_normalisation(directory: Path, default_mean, default_std) -> tuple[tuple, tuple]:
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return default_mean, default_std
    config = read_json(path)
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
        with pickled_weights_refused(path):
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
        model_type = read_json(config_path).get("model_type")
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
