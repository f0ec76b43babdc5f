"""Per-GPU memory of a training run, computed from its config before anything is loaded.

What a run holds on each GPU, in bytes:

- frozen weights: the LM at its storage dtype (``model.lm_dtype``; bf16 when training in bf16 without FSDP,
  since the trainer then stores the frozen parts in bf16), sharded over the N ranks by FSDP2 (which keeps the
  embeddings, final norm and head of a bf16 LM in fp32); the vision encoder is replicated (FSDP ignores it);
- trainable weights, their gradients and AdamW's two moments: fp32, 16 bytes per parameter, sharded by FSDP2;
- FSDP2's working set: the all-gathered full parameters of the unit being computed and of the one prefetched
  (two decoder layers or gated blocks, the larger of them);
- activations of one micro-batch (``batch_size / grad_accum`` rows of ``max_length`` tokens), the largest over
  the mixture's datasets (each micro-batch finishes its backward before the next starts). A transformer layer
  stores about 34·b·s·d bytes at 16 bits with fused attention (Korthikanti et al., 2022, eq. 1 without the
  attention-score term that SDPA never stores), twice that in fp32. Gradients flow through the frozen layers
  to the first gated block, so their activations are kept too, unless ``activation_checkpointing``: then a
  layer keeps only its input (2·b·s·d) and one layer is recomputed at a time. Gated blocks and the resampler
  keep theirs; the loss keeps fp32 log-probabilities at the labelled positions (b·s·V·4, twice).

Parameter counts are exact: the LM is built from its ``config.json`` on the ``meta`` device (no weights are
read) and the resampler and gated blocks are built on ``meta`` from the Flamingo config. The vision encoder is
small next to the LM and is loaded to count it and to measure its tokens per frame. The activation terms are
an estimate (allocator fragmentation, CUDA context and NCCL buffers add ~1–3 GB); compare with
``torch.cuda.max_memory_allocated`` from a few real steps before renting the cluster.

``PAPER_LAYOUTS`` are Flamingo-3B/9B/80B (Alayrac et al., 2022, Table 5 and App. B.1): Chinchilla-family LMs of
1.4B/7B/70B parameters (their widths and depths, a 32k vocabulary), an NFNet-F6 vision encoder (435M parameters,
1536-wide features, a 10×10 grid at 320 px), a 6-layer resampler with 64 latents, and a gated block before every
1st/4th/7th layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from flamingo_vlm.config import FlamingoConfig
from flamingo_vlm.model.flamingo import build_resampler
from flamingo_vlm.model.language import find_decoder_layers
from flamingo_vlm.model.xattn import GatedCrossAttentionDense
from flamingo_vlm.train.config import TrainConfig

GiB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class ModelShapes:
    """What decides a Flamingo's memory: parameter counts and the widths activations scale with."""

    lm_params: int
    lm_layers: int
    lm_hidden: int
    lm_vocab: int
    lm_layer_params: int  # the largest decoder layer (an FSDP unit)
    lm_bytes: int  # per frozen LM parameter as loaded (lm_dtype; "auto" counts as fp32)
    vision_params: int
    vision_hidden: int
    vision_tokens: int  # per frame
    xattn_params: int  # all gated blocks
    num_blocks: int
    resampler_params: int
    new_token_params: int

    @property
    def trainable_params(self) -> int:
        return self.xattn_params + self.resampler_params + self.new_token_params

    @property
    def total_params(self) -> int:
        return self.lm_params + self.vision_params + self.trainable_params


@dataclass(frozen=True)
class PaperLayout:
    """A Flamingo of the paper, as an LM shape and the Flamingo options around it."""

    lm_hidden: int
    lm_layers: int
    lm_heads: int
    cross_attn_every: int
    xattn_heads: int
    lm_vocab: int = 32_000
    vision_params: int = 435_000_000
    vision_hidden: int = 1536
    vision_tokens: int = 100


PAPER_LAYOUTS = {
    "3b": PaperLayout(lm_hidden=2048, lm_layers=24, lm_heads=16, cross_attn_every=1, xattn_heads=16),
    "9b": PaperLayout(lm_hidden=4096, lm_layers=32, lm_heads=32, cross_attn_every=4, xattn_heads=32),
    "80b": PaperLayout(lm_hidden=8192, lm_layers=80, lm_heads=64, cross_attn_every=7, xattn_heads=64),
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() yields a tied tensor once


def _trainable_shapes(config: FlamingoConfig, lm_hidden: int, lm_layers: int, vision_hidden: int) -> dict[str, int]:
    """Exact parameter counts of the gated blocks and the resampler, built on ``meta`` (no memory)."""
    blocks = len(range(config.cross_attn_offset, lm_layers, config.cross_attn_every))
    with torch.device("meta"):
        block = GatedCrossAttentionDense(
            lm_hidden,
            vision_hidden,
            config.xattn_heads,
            config.xattn_dim_head,
            config.xattn_ff_mult,
            config.activation,
            config.xattn_qk_norm,
        )
        resampler = build_resampler(config, vision_hidden)
    return {"xattn_params": blocks * _count(block), "num_blocks": blocks, "resampler_params": _count(resampler)}


def _lm_bytes(config: FlamingoConfig) -> int:
    return DTYPE_BYTES.get(config.lm_dtype, 4)


def shapes_from_config(config: FlamingoConfig) -> ModelShapes:
    """The shapes of the model ``config`` describes: the LM built on ``meta`` from its config.json, the vision
    encoder loaded (it is small) to count it and to measure its tokens per frame."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from flamingo_vlm.model.causal_lm import resolve_lm_spec
    from flamingo_vlm.model.vision import load_vision_encoder

    if not config.lm or not config.vision:
        raise ValueError("model.lm and model.vision must name the frozen LM and vision encoder (path or hub id)")
    path, kwargs = resolve_lm_spec(config.lm)
    lm_config = AutoConfig.from_pretrained(path, **{k: v for k, v in kwargs.items() if k == "gguf_file"})
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(lm_config)
    layers = find_decoder_layers(lm, config.decoder_layers_attr)
    vision = load_vision_encoder(config.vision)
    with torch.no_grad():
        tokens = vision(torch.zeros(1, vision.num_channels, vision.image_size, vision.image_size)).shape[1]
    hidden = lm.config.hidden_size
    tied = lm.get_output_embeddings() is None or lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    return ModelShapes(
        lm_params=_count(lm),
        lm_layers=len(layers),
        lm_hidden=hidden,
        lm_vocab=lm.get_input_embeddings().num_embeddings,
        lm_layer_params=max(_count(layer) for layer in layers),
        lm_bytes=_lm_bytes(config),
        vision_params=_count(vision),
        vision_hidden=vision.hidden_size,
        vision_tokens=tokens,
        new_token_params=2 * hidden * (1 if tied else 2),
        **_trainable_shapes(config, hidden, len(layers), vision.hidden_size),
    )


def paper_shapes(name: str, config: FlamingoConfig) -> ModelShapes:
    """Flamingo-3B/9B/80B: the paper's LM and vision shapes, the resampler and blocks as the paper sets them
    (``config`` gives the dtype and anything the paper leaves open)."""
    if name not in PAPER_LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose from {sorted(PAPER_LAYOUTS)}")
    layout = PAPER_LAYOUTS[name]
    from transformers import LlamaConfig, LlamaForCausalLM

    d = layout.lm_hidden
    lm_config = LlamaConfig(
        vocab_size=layout.lm_vocab,
        hidden_size=d,
        intermediate_size=4 * d,  # Chinchilla's FFW is 4·d wide, not gated: 8·d² per layer, as here with 2/3 of 3
        num_hidden_layers=layout.lm_layers,
        num_attention_heads=layout.lm_heads,
        tie_word_embeddings=False,
    )
    lm_config.mlp_bias = False
    with torch.device("meta"):
        lm = LlamaForCausalLM(lm_config)
    # A gated (SwiGLU) MLP holds 3·d·ff weights; Chinchilla's plain one 2·d·ff: drop the extra third.
    layer = lm.model.layers[0]
    gate = layer.mlp.gate_proj.weight.numel()
    layer_params = _count(layer) - gate
    flamingo = replace(
        config,
        cross_attn_every=layout.cross_attn_every,
        cross_attn_offset=0,
        xattn_heads=layout.xattn_heads,
        xattn_dim_head=128,
        xattn_ff_mult=4,
        num_latents=64,
        resampler_depth=6,
        resampler_heads=16,
        resampler_dim_head=96,
        resampler_ff_mult=4,
    )
    return ModelShapes(
        lm_params=_count(lm) - gate * layout.lm_layers,
        lm_layers=layout.lm_layers,
        lm_hidden=d,
        lm_vocab=layout.lm_vocab,
        lm_layer_params=layer_params,
        lm_bytes=_lm_bytes(config),
        vision_params=layout.vision_params,
        vision_hidden=layout.vision_hidden,
        vision_tokens=layout.vision_tokens,
        new_token_params=4 * d,
        **_trainable_shapes(flamingo, d, layout.lm_layers, layout.vision_hidden),
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU, by what holds them."""

    rows: dict[str, float]
    world_size: int
    strategy: str
    micro_batch: dict[str, int]  # dataset → rows per micro-batch

    @property
    def total(self) -> float:
        return sum(self.rows.values())

    def table(self, shapes: ModelShapes) -> str:
        lines = [
            f"parameters: frozen LM {shapes.lm_params / 1e9:.2f}B, vision {shapes.vision_params / 1e9:.2f}B, "
            f"trainable {shapes.trainable_params / 1e9:.2f}B ({shapes.num_blocks} gated blocks "
            f"{shapes.xattn_params / 1e9:.2f}B, resampler {shapes.resampler_params / 1e9:.3f}B), "
            f"total {shapes.total_params / 1e9:.2f}B",
            f"{self.strategy} over {self.world_size} GPU(s); micro-batches "
            + ", ".join(f"{k} {v}" for k, v in self.micro_batch.items()),
            f"{'per GPU':<34}{'GiB':>9}",
        ]
        lines += [f"{name:<34}{value / GiB:>9.2f}" for name, value in self.rows.items()]
        lines.append(f"{'total':<34}{self.total / GiB:>9.2f}")
        return "\n".join(lines)


def _tokens(dataset, shapes: ModelShapes) -> tuple[int, int]:
    """(text tokens, media tokens into the resampler) per row of ``dataset``."""
    if dataset.type == "interleaved":
        frames = dataset.max_images
    elif dataset.type == "video_text":
        frames = dataset.num_frames
    else:
        frames = 1
    return dataset.max_length, frames * shapes.vision_tokens


def _activation_bytes(config: TrainConfig, shapes: ModelShapes, dataset, bf16: bool) -> float:
    rows = dataset.batch_size // config.optim.grad_accum
    length, media_tokens = _tokens(dataset, shapes)
    scale = 1 if bf16 else 2  # the 34·b·s·d rule counts 16-bit activations
    layer = 34 * rows * length * shapes.lm_hidden * scale
    if config.activation_checkpointing:
        frozen = shapes.lm_layers * 2 * rows * length * shapes.lm_hidden * scale + layer
    else:
        frozen = shapes.lm_layers * layer
    blocks = shapes.num_blocks * layer
    resampler = 34 * rows * media_tokens * shapes.vision_hidden * scale * max(config.model.resampler_depth, 1)
    logits = 2 * rows * length * shapes.lm_vocab * 4
    return frozen + blocks + resampler + logits


def estimate_memory(
    config: TrainConfig, shapes: ModelShapes, world_size: int, device_type: str = "cuda"
) -> MemoryEstimate:
    """Bytes per GPU for ``config`` on ``world_size`` GPUs (its strategy; ``auto`` is DDP with several)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    strategy = config.strategy if config.strategy != "auto" else ("ddp" if world_size > 1 else "none")
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device_type == "cuda")
    shard = world_size if strategy == "fsdp" else 1
    lm_bytes = 2 if bf16 and strategy != "fsdp" else shapes.lm_bytes  # the trainer stores frozen parts in bf16
    vision_bytes = 2 if bf16 and strategy != "fsdp" else 4
    trainable = shapes.trainable_params
    frozen_lm = shapes.lm_params * lm_bytes
    if strategy == "fsdp" and lm_bytes < 4:  # the root unit's embeddings/norm/head are upcast to fp32 (one dtype)
        outside_layers = shapes.lm_params - shapes.lm_layers * shapes.lm_layer_params
        frozen_lm += outside_layers * (4 - lm_bytes)
    rows: dict[str, float] = {
        "frozen LM weights": frozen_lm / shard,
        "frozen vision weights": shapes.vision_params * vision_bytes,
        "trainable weights (fp32)": trainable * 4 / shard,
        "gradients (fp32)": trainable * 4 / shard,
        "AdamW moments (2 x fp32)": trainable * 8 / shard,
    }
    if strategy == "fsdp" and world_size > 1:
        block = shapes.xattn_params / max(shapes.num_blocks, 1) * 4
        rows["FSDP all-gathered units (2)"] = 2 * max(shapes.lm_layer_params * lm_bytes, block)
    datasets = config.data.datasets
    if not datasets:
        raise ValueError("data.datasets is empty: the activations depend on each dataset's batch and length")
    rows["activations (largest micro-batch)"] = max(_activation_bytes(config, shapes, d, bf16) for d in datasets)
    micro = {d.name: d.batch_size // config.optim.grad_accum for d in datasets}
    return MemoryEstimate(rows, world_size, strategy, micro)


def report(config: TrainConfig, world_size: int, layout: str | None = None) -> str:
    """The printed estimate: for ``config``'s own model, or for a paper layout with ``config``'s data."""
    shapes = paper_shapes(layout, config.model) if layout else shapes_from_config(config.model)
    estimate = estimate_memory(config, shapes, world_size)
    title = f"Flamingo-{layout.upper()} (paper layout)" if layout else f"{config.model.lm} + {config.model.vision}"
    fits = [gb for gb in (24, 40, 80, 141) if estimate.total / GiB <= gb * 0.92]
    verdict = f"fits a {fits[0]} GB GPU" if fits else "exceeds a 141 GB GPU: more GPUs (FSDP) or a smaller micro-batch"
    return f"{title}\n{estimate.table(shapes)}\n=> {verdict} (estimate; keep ~8% headroom)"


def summary_row(config: TrainConfig, shapes: ModelShapes, world_sizes: list[int]) -> dict[str, Any]:
    """``{world_size: GiB per GPU}``, for a table over cluster sizes."""
    return {n: round(estimate_memory(config, shapes, n).total / GiB, 1) for n in world_sizes}


__all__ = [
    "PAPER_LAYOUTS",
    "MemoryEstimate",
    "ModelShapes",
    "estimate_memory",
    "paper_shapes",
    "report",
    "shapes_from_config",
    "summary_row",
]
