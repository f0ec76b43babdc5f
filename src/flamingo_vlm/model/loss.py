"""The language-modelling loss, one definition for the model's forward and the trainer's token counts.

Labels are aligned with the inputs (token t predicts label t+1, the shift happens here) and
``IGNORE_INDEX`` marks positions that carry no loss (prompts, ``<image>`` tokens, padding). The
trainer normalises by the number of loss tokens over a whole step, so it must count them by the
same rule the loss sums them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def loss_mask(labels: torch.Tensor) -> torch.Tensor:
    """labels (b, T) → (b, T-1) booleans: which next-token predictions carry a loss."""
    return labels[:, 1:] != IGNORE_INDEX


def num_loss_tokens(labels: torch.Tensor) -> int:
    """How many tokens :func:`lm_loss` sums over for these labels."""
    return int(loss_mask(labels).sum())


def lm_loss(
    head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, labels: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL and the number of loss tokens; labels (b, T) aligned with inputs, -100 ignored.

    The vocabulary projection runs only where a label exists, ``chunk`` rows at a time, each chunk
    recomputed in backward rather than stored: a (b·T, V) logits tensor with a large vocabulary is
    larger than all the activations of a small LM, and most of its rows (padding, prompts) carry no loss.
    """
    keep = loss_mask(labels)  # (b, T-1): token t predicts label t+1
    rows, targets = hidden[:, :-1][keep], labels[:, 1:][keep]  # (n, d), (n,)

    def chunk_nll(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), t, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    recompute = torch.is_grad_enabled()
    for h, t in zip(rows.split(chunk), targets.split(chunk)):
        total = total + (checkpoint(chunk_nll, h, t, use_reentrant=False) if recompute else chunk_nll(h, t))
    return total, int(keep.sum())
