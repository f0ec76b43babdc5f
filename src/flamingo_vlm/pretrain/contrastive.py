"""Contrastive (CLIP-style) pretraining of a vision encoder, as the paper pretrains its NFNet.

An image tower (the vision encoder, features mean-pooled) and a small text tower are trained so
that matching image–caption pairs have the highest cosine similarity in the batch (symmetric
cross-entropy over the similarity matrix, learned temperature). Only the image tower is kept: it
is what Flamingo freezes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flamingo_vlm.model.vision_encoder import VisionEncoder
from flamingo_vlm.pretrain.schedule import optimise


@dataclass
class ContrastiveConfig:
    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    embed_dim: int = 128
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_text_length: int = 64


class TextTower(nn.Module):
    """A small bidirectional transformer over caption tokens, mean-pooled over real tokens."""

    def __init__(self, vocab_size: int, config: ContrastiveConfig) -> None:
        super().__init__()
        w = config.text_width
        self.embed = nn.Embedding(vocab_size, w)
        self.pos = nn.Parameter(torch.randn(config.max_text_length, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, config.text_heads, 4 * w, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b, L) → (b, w)."""
        L = min(input_ids.shape[1], self.pos.shape[0])
        ids, mask = input_ids[:, :L], attention_mask[:, :L].bool()
        x = self.encoder(self.embed(ids) + self.pos[:L], src_key_padding_mask=~mask)  # (b, L, w)
        x = self.norm(x) * mask.unsqueeze(-1)
        return x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


class ContrastiveModel(nn.Module):
    def __init__(self, vision: VisionEncoder, vocab_size: int, config: ContrastiveConfig) -> None:
        super().__init__()
        self.vision = vision
        self.text = TextTower(vocab_size, config)
        self.image_proj = nn.Linear(vision.hidden_size, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(config.text_width, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(b, c, h, w) → unit vectors (b, e)."""
        return F.normalize(self.image_proj(self.vision(pixels).mean(1)), dim=-1)

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text(input_ids, attention_mask)), dim=-1)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The symmetric InfoNCE loss of a batch of matching pairs."""
        img, txt = self.embed_images(pixels), self.embed_texts(input_ids, attention_mask)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T  # (b, b)
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pretrain_vision_encoder(
    vision: VisionEncoder,
    batches: Iterable[dict[str, torch.Tensor]],
    vocab_size: int,
    config: ContrastiveConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``vision`` in place on pair batches (as made by ``flamingo_vlm.data.ImageTextDataset``:
    ``pixel_values (b, 1, 1, c, h, w)``, ``input_ids``, ``attention_mask``); returns the losses."""
    vision.requires_grad_(True)
    model = ContrastiveModel(vision, vocab_size, config)

    def loss_fn(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = batch["pixel_values"][:, 0, 0]  # (b, c, h, w): one image, one frame
        return model(pixels, batch["input_ids"], batch["attention_mask"])

    history = optimise(
        model,
        batches,
        loss_fn,
        steps=config.steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup=config.warmup_steps,
        on_step=on_step,
    )
    vision.requires_grad_(False).eval()
    return history
