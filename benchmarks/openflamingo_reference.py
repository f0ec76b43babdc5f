"""The ``open-flamingo`` package's own model, built around Hugging Face parts: the parity reference.

Used by the parity tests (``tests/convert``) and ``vs_openflamingo.py`` beside it, never by the package; needs
``pip install --no-deps open-flamingo==2.0.1 einops einops-exts`` (with its dependencies it would
pin torch 2.0.1). OpenFlamingo builds its vision encoder with open_clip, which we do not install:
its model only ever calls ``vision_encoder.visual(pixels)[1]``, the patch tokens of an open_clip
ViT, which for the same weights are an HF ``CLIPVisionModel``'s ``last_hidden_state[:, 1:]`` (both
before the final LayerNorm, as in the open_clip 2.16–2.23 that OpenFlamingo was trained with). So
its factory runs unchanged, with a stand-in for the two open_clip functions it calls.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from unittest import mock

import torch
from torch import nn


class OpenClipVisual(nn.Module):
    """An HF CLIP vision tower behind open_clip's ``visual`` contract (``output_tokens=True``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=pixels)
        return out.pooler_output, out.last_hidden_state[:, 1:]  # pooled (N, d), tokens (N, v, d)


class _OpenClipModel(nn.Module):
    def __init__(self, vision_model: nn.Module) -> None:
        super().__init__()
        self.visual = OpenClipVisual(vision_model)


class OptionalAttentionMask:
    """Compatibility with transformers >= 5, which drops an all-ones ``attention_mask`` in ``generate``.

    OpenFlamingo's ``FlamingoLMMixin.forward(self, input_ids, attention_mask, **kwargs)`` requires it
    positionally and fails with a TypeError; this mixin only gives it a default. Its signature
    still lacks ``position_ids``, as the original's does (so HF does not derive them from the mask).
    """

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return super().forward(input_ids, attention_mask, **kwargs)


def import_open_flamingo() -> types.ModuleType:
    """``open_flamingo``, imported with a placeholder ``open_clip`` when the real one is absent."""
    if "open_flamingo" in sys.modules:
        return sys.modules["open_flamingo"]
    if importlib.util.find_spec("open_flamingo") is None:
        raise ModuleNotFoundError(
            "the OpenFlamingo reference needs `pip install --no-deps open-flamingo==2.0.1 einops einops-exts`",
            name="open_flamingo",
        )
    placeholder = importlib.util.find_spec("open_clip") is None
    if placeholder:
        sys.modules["open_clip"] = types.ModuleType("open_clip")
    try:
        return importlib.import_module("open_flamingo")
    finally:
        if placeholder:
            del sys.modules["open_clip"]


def build_openflamingo(lm_path: str, vision_model: nn.Module, cross_attn_every_n_layers: int = 1):
    """OpenFlamingo's ``create_model_and_transforms`` around a local HF LM and an HF CLIP vision model.

    Returns ``(model, tokenizer)`` exactly as its factory makes them: tokens added, embeddings
    resized, everything frozen but the resampler, the blocks and the input embeddings.
    """
    open_flamingo = import_open_flamingo()
    from open_flamingo.src import factory
    from open_flamingo.src.utils import extend_instance

    stand_in = types.SimpleNamespace(
        create_model_and_transforms=lambda *args, **kwargs: (_OpenClipModel(vision_model), None, None),
        get_model_config=lambda *args, **kwargs: {"vision_cfg": {"width": vision_model.config.hidden_size}},
    )
    with mock.patch.object(factory, "open_clip", stand_in):
        model, _, tokenizer = open_flamingo.create_model_and_transforms(
            clip_vision_encoder_path="hf-clip",
            clip_vision_encoder_pretrained="local",
            lang_encoder_path=lm_path,
            tokenizer_path=lm_path,
            cross_attn_every_n_layers=cross_attn_every_n_layers,
        )
    extend_instance(model.lang_encoder, OptionalAttentionMask)
    return model, tokenizer
