"""Batching samples with different numbers of media items."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

TEXT_KEYS = ("input_ids", "attention_mask", "labels")


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples into ``(b, ...)`` tensors, padding media slots to the batch maximum.

    Real media come first in each row and padding slots are zero with ``media_mask`` False, so the
    j-th ``<image>`` token of a row still refers to slot j.  Bookkeeping keys (``"__...__"``) are
    left out: the batch can go straight into ``model(**batch)``.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    batch = {key: torch.stack([s[key] for s in samples]) for key in TEXT_KEYS}  # (b, L)
    media = [s["pixel_values"] for s in samples]  # each (n_i, t, c, h, w)
    shapes = {tuple(m.shape[1:]) for m in media}
    if len(shapes) > 1:
        raise ValueError(f"media of one batch must share (t, c, h, w); got {sorted(shapes)}")
    max_media = max(m.shape[0] for m in media)
    pixel_values = media[0].new_zeros((len(samples), max_media, *media[0].shape[1:]))  # (b, n, t, c, h, w)
    media_mask = torch.zeros(len(samples), max_media, dtype=torch.bool)  # (b, n)
    for row, m in enumerate(media):
        pixel_values[row, : m.shape[0]] = m
        media_mask[row, : m.shape[0]] = True
    batch["pixel_values"] = pixel_values
    batch["media_mask"] = media_mask
    return batch
