"""The paper's optimiser: AdamW with weight decay only on the gated blocks' weight matrices.

Decay pulls weights towards zero. On the gated cross-attention matrices that is plain
regularisation; on a gate it would pull the model back towards the bare LM, on a norm gain towards
a dead layer, on the resampler latents or the new token rows towards meaningless zeros. Flamingo
therefore decays the gated blocks' matrices only (paper App. B.1.2: 0.1) and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from flamingo_vlm.model.xattn import GATE_NAMES
from flamingo_vlm.train.config import OptimConfig

GATED_BLOCKS_PREFIX = "language_model.gated_xattn."


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether a trainable parameter gets weight decay: the gated blocks' matrices (ndim ≥ 2)."""
    return name.startswith(GATED_BLOCKS_PREFIX) and param.ndim >= 2


def param_group(name: str) -> str:
    """Which learning-rate group a trainable parameter belongs to (``OptimConfig.lr_multipliers``).

    The gates are their own group: a gate is one scalar that decides whether a whole block is heard,
    and at the paper's single learning rate it barely moves in a short run (docs/results.md).
    """
    if name.startswith(GATED_BLOCKS_PREFIX):
        return "gates" if name.endswith(GATE_NAMES) else "xattn"
    if name.startswith("resampler."):
        return "resampler"
    if name.startswith("language_model.new_tokens."):
        return "new_tokens"
    raise ValueError(f"trainable parameter {name!r} belongs to no optimiser group")


def parameter_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    lr: float,
    lr_multipliers: dict[str, float] | None = None,
) -> list[dict]:
    """AdamW groups by (learning-rate group, decay), names kept for checkpoints; ``lr_scale`` recorded."""
    multipliers = lr_multipliers or {}
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        key = (param_group(name), decays(name, param))
        scale = multipliers.get(key[0], 1.0)
        decay = weight_decay if key[1] else 0.0
        group = groups.setdefault(
            key, {"params": [], "param_names": [], "weight_decay": decay, "lr": lr * scale, "lr_scale": scale}
        )
        group["params"].append(param)
        group["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return list(groups.values())


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    groups = parameter_groups(model.named_parameters(), config.weight_decay, config.lr, config.lr_multipliers)
    # foreach=False: the same kernels whatever the parameter layout (plain, DDP or FSDP DTensors),
    # so single-process and distributed runs stay numerically comparable.
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps, foreach=False)


def lr_multiplier(step: int, config: OptimConfig, max_steps: int) -> float:
    """Linear warm-up from 0 over ``warmup_steps``, then constant (paper) or cosine to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    decay_steps = max(max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / decay_steps, 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_multiplier(step, config, max_steps))
