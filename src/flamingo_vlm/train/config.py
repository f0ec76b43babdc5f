"""Training configuration: the sections of ``flamingo train``'s YAML file, as dataclasses.

Loading, ``key=value`` overrides and type checking are :mod:`flamingo_vlm.config`'s, shared by every recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from flamingo_vlm.config import FlamingoConfig, build_config, load_config

DatasetType = Literal["interleaved", "image_text", "video_text"]
Strategy = Literal["auto", "none", "ddp", "fsdp"]
Precision = Literal["auto", "bf16", "fp32"]
LRSchedule = Literal["constant", "cosine"]
ParamGroup = Literal["gates", "xattn", "resampler", "new_tokens"]


@dataclass
class DatasetConfig:
    """One component of the mixture: where its shards are, its λ and its batch size."""

    name: str
    type: DatasetType
    shards: str | list[str]
    weight: float = 1.0  # λ: multiplies this dataset's loss
    batch_size: int = 8  # per rank and per optimiser step (split into micro-batches by grad_accum)
    max_length: int = 32  # tokens (paper: 256 for interleaved, 32 for pairs)
    max_images: int = 5  # interleaved only: images per window
    p_next: float = 0.5  # interleaved only: probability of tying text to the next image
    num_frames: int = 8  # video only
    fps: float = 1.0  # video only
    shuffle_buffer: int = 64
    start_step: int = 0  # joins the mixture at this step (e.g. pairs first, web pages later)


@dataclass
class DataConfig:
    datasets: list[DatasetConfig] = field(default_factory=list)
    # Held-out batch for the vision-use probe (logging.probe_every); by default a batch of the first
    # image-text dataset drawn with another seed, which is not held out.
    probe: DatasetConfig | None = None
    schedule: Literal["accumulate", "round_robin"] = "accumulate"
    num_workers: int = 0
    seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.1  # gated-block weight matrices only
    warmup_steps: int = 5000
    schedule: LRSchedule = "constant"
    min_lr_ratio: float = 0.0  # cosine: final lr = lr · min_lr_ratio
    grad_clip: float | None = 1.0  # global norm, once per optimiser step; null disables
    grad_accum: int = 1  # micro-batches per dataset batch
    # Per-group learning rate = lr × multiplier (1 where absent); e.g. {gates: 100} (docs/results.md).
    lr_multipliers: dict[ParamGroup, float] = field(default_factory=dict)


@dataclass
class CheckpointConfig:
    every: int = 1000  # optimiser steps between checkpoints (and one at the end)
    keep_last: int = 3


@dataclass
class LoggingConfig:
    every: int = 1  # steps between metric records
    probe_every: int = 50  # steps between vision-use probes (NLL gap to shuffled/blank images, gates); 0: off
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = False  # only if tensorboard is installed
    wandb: bool = False  # only if wandb is installed
    wandb_project: str = "flamingo"


@dataclass
class TrainConfig:
    model: FlamingoConfig = field(default_factory=FlamingoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output_dir: str = "runs/flamingo"
    max_steps: int = 1000
    seed: int = 0
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32
    activation_checkpointing: bool = False  # recompute the frozen LM layers in backward
    feature_cache: str | None = None  # directory for cached frozen vision features
    max_consecutive_skips: int = 10  # non-finite steps in a row before the run aborts
    strategy: Strategy = "auto"  # auto: ddp under torchrun with several ranks, else none
    device: str = "auto"
    resume: bool = False

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.optim.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.optim.grad_accum}")
        if not any(d.start_step == 0 for d in self.data.datasets) and self.data.datasets:
            raise ValueError("at least one dataset must start at step 0 (data.datasets.*.start_step)")
        for d in self.data.datasets:
            if d.batch_size % self.optim.grad_accum:
                raise ValueError(
                    f"data.datasets[{d.name}].batch_size={d.batch_size} is not divisible by "
                    f"optim.grad_accum={self.optim.grad_accum}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return build_config(cls, data)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        return load_config(cls, path, overrides)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (avx512_bf16 or AMX), where bf16 autocast is worth it."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` → bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere; explicit choices kept."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()) else "fp32"
