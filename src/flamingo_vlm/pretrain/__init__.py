"""Pretraining of the parts Flamingo freezes, for when no pretrained checkpoint can be downloaded.

The paper freezes a contrastively pretrained vision encoder and a pretrained LM. Where a hub is
reachable, use theirs; where it is not (ShapesWorld, air-gapped clusters), these recipes make them
from image–text pairs and plain text, saved in the same formats as hub checkpoints.
"""

from flamingo_vlm.pretrain.contrastive import ContrastiveConfig, ContrastiveModel, TextTower, pretrain_vision_encoder
from flamingo_vlm.pretrain.lm import LMConfig, build_llama, pretrain_lm

__all__ = [
    "ContrastiveConfig",
    "ContrastiveModel",
    "LMConfig",
    "TextTower",
    "build_llama",
    "pretrain_lm",
    "pretrain_vision_encoder",
]
