"""FlamingoConfig: every hyper-parameter of the trainable Flamingo parts, as one flat dataclass.

Flat on purpose: it maps one-to-one onto ``Flamingo.from_components(**kwargs)``, onto YAML presets
and onto ``key=value`` command-line overrides, with no nesting rules to learn.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

MediaAttention = Literal["previous", "all_previous"]
Activation = Literal["squared_relu", "gelu"]


@dataclass
class FlamingoConfig:
    # Frozen parts: references that from_pretrained resolves (hub id, local path, or a path
    # relative to the checkpoint directory for self-contained checkpoints).
    lm: str = ""
    vision: str = ""
    # Perceiver Resampler (paper: 6 layers, 64 latents).
    num_latents: int = 64
    resampler_depth: int = 6
    resampler_heads: int = 8
    resampler_dim_head: int = 64
    resampler_ff_mult: int = 4
    max_frames: int = 8  # learned temporal embeddings; longer videos interpolate them
    resampler_time_embeddings: bool = True  # OpenFlamingo adds none: its frames are flattened as they are
    resampler_latent_std: float = 1.0  # initial scale of the learned latents (small: media dominate; results.md)
    # Gated cross-attention dense blocks.
    cross_attn_every: int = 1  # a block before every n-th frozen decoder layer
    cross_attn_offset: int = 0  # decoder layer of the first block (OpenFlamingo: cross_attn_every - 1)
    xattn_heads: int = 8
    xattn_dim_head: int = 64
    xattn_ff_mult: int = 4
    xattn_qk_norm: bool = False  # IDEFICS found q/k LayerNorm stabilises large-scale training
    activation: Activation = "squared_relu"  # FFW activation in resampler and xattn blocks
    media_attention: MediaAttention = "previous"  # paper default: a token sees only its last image
    # Departures from the paper that make a frozen pretrained LM start to see sooner (docs/results.md):
    xattn_residual_scale: bool = False  # scale block outputs by the residual stream's typical RMS
    xattn_gate_init: float = 0.0  # ≠ 0: gates start open, branch output projections at zero (still identity)
    train_new_tokens: bool = True  # False: fixed <image>/<|endofchunk|> rows; backward stops at the first block
    # Tokens and LM plumbing.
    media_token: str = "<image>"
    eoc_token: str = "<|endofchunk|>"
    decoder_layers_attr: str | None = None  # e.g. "model.layers" for an unknown architecture

    def __post_init__(self) -> None:
        if self.media_attention not in ("previous", "all_previous"):
            raise ValueError(f"media_attention must be 'previous' or 'all_previous', got {self.media_attention!r}")
        if self.activation not in ("squared_relu", "gelu"):
            raise ValueError(f"activation must be 'squared_relu' or 'gelu', got {self.activation!r}")
        for name in ("cross_attn_every", "num_latents", "resampler_depth", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.resampler_latent_std > 0:
            raise ValueError(f"resampler_latent_std must be > 0, got {self.resampler_latent_std}")
        if not 0 <= self.cross_attn_offset < self.cross_attn_every:
            raise ValueError(
                f"cross_attn_offset must be in [0, cross_attn_every={self.cross_attn_every}), got {self.cross_attn_offset}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlamingoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FlamingoConfig keys: {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FlamingoConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
