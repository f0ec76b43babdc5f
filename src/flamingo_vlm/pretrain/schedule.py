"""The small optimisation loop shared by the pretraining recipes: AdamW, warm-up, clipping."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def optimise(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``steps`` AdamW steps of ``loss_fn(batch)``; returns the loss history."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, steps))
    history: list[float] = []
    model.train()
    iterator: Iterator[Any] = iter(batches)
    for step in range(steps):
        loss = loss_fn(next(iterator))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(loss.item())
        if on_step is not None:
            on_step(step, history[-1])
    model.eval()
    return history


def progress_callback(total: int, desc: str, enabled: bool = True) -> Callable[[int, float], None]:
    """An ``on_step`` for :func:`optimise` that drives a tqdm bar showing the loss."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, disable=not enabled)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step + 1 == total:
            bar.close()

    return on_step
