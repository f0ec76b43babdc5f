"""The benchmarks' "small" configuration: CLIP-style ViT (4 layers, 224 px) + Llama-style LM (256 × 4).

Random weights, built locally and saved like hub checkpoints, so that every benchmark measures the
real loading and forward paths without a download.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from flamingo_vlm import Flamingo
from flamingo_vlm.model.vision import HFVisionTower
from flamingo_vlm.tokenization import train_bpe_tokenizer

IMAGE_SIZE = 224
WORDS = "a red square is above a blue circle and two green triangles move left of the grey star question answer".split()


def build_small_components(
    root: str | Path,
    seed: int = 0,
    *,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    image_size: int = IMAGE_SIZE,
    patch_size: int = 16,
) -> tuple[str, str]:
    """Write the small LM (+ tokenizer) and vision tower under ``root``; returns their directories.

    The keyword arguments shrink both (LM and ViT alike) for checks that must run in seconds on a CPU.
    """
    root = Path(root)
    torch.manual_seed(seed)
    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 8
    tokenizer = train_bpe_tokenizer(texts, vocab_size=1024)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=2048,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        )
    )
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            image_size=image_size,
            patch_size=patch_size,
        )
    )
    HFVisionTower(vision, drop_cls=True).save_pretrained(root / "vision")
    return str(root / "lm"), str(root / "vision")


def build_small_flamingo(root: str | Path, seed: int = 0, sizes: dict | None = None, **config) -> Flamingo:
    """The small Flamingo: paper-default resampler (6 layers, 64 latents), a block every layer.

    ``sizes``: :func:`build_small_components` keywords; ``config``: FlamingoConfig fields.
    """
    lm, vision = build_small_components(root, seed, **(sizes or {}))
    torch.manual_seed(seed)
    model = Flamingo.from_components(lm, vision, **config)
    with torch.no_grad():  # open the gates: a trained model's images matter
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    return model
