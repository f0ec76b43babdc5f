"""Has the model started to see? Caption loss with the right images vs shuffled or blanked ones.

A falling training loss says little: a Flamingo on a pretrained LM learns the data's *text* (its new
token rows and the gated feed-forward paths need no image) long before its cross-attention carries
anything visual. What does say it is the loss *gap*: the NLL of the same text when each image is
swapped for another sample's (``shuffled``: same distribution, wrong content) or blanked (``blank``:
an input the model never saw, so the gap also measures surprise at an odd input). A model that ignores
its images has gaps of 0. The gates' values and each block's update relative to the residual stream
say where the signal stands: a gate can be open while the update is still a rounding error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


@dataclass
class VisionUse:
    nll: float  # token-mean NLL of the labels with the right images
    nll_shuffled: float  # each image replaced by another sample's
    nll_blank: float  # every image blanked (zero after normalisation: the mean colour)
    attn_gates: list[float]  # tanh(α_attn) per block
    ff_gates: list[float]  # tanh(α_ff) per block
    update_ratios: list[float]  # per block: median over tokens of ‖block(y) − y‖ / ‖y‖

    @property
    def gap_shuffled(self) -> float:
        return self.nll_shuffled - self.nll

    @property
    def gap_blank(self) -> float:
        return self.nll_blank - self.nll

    def record(self) -> dict[str, float | list[float]]:
        """Flat metrics for a training log."""
        return {
            "vision/nll": self.nll,
            "vision/gap_shuffled": self.gap_shuffled,
            "vision/gap_blank": self.gap_blank,
            "vision/attn_gates": self.attn_gates,
            "vision/ff_gates": self.ff_gates,
            "vision/update_ratios": self.update_ratios,
        }


def shuffle_media(batch: Batch) -> Batch:
    """The batch with every real image or video moved to the next real slot (a cyclic shift).

    Text, masks and slot layout are untouched, so each text keeps the same number of media, in the
    same places, but sees another sample's. With a single real medium there is nothing to swap.
    """
    key = "pixel_values" if "pixel_values" in batch else "vision_features"
    real = batch["media_mask"].bool()  # (b, n)
    if int(real.sum()) < 2:
        raise ValueError("shuffling media needs at least two real images or videos in the batch")
    media = batch[key].clone()  # (b, n, t, ...)
    media[real] = media[real].roll(1, dims=0)
    return {**batch, key: media}


def blank_media(batch: Batch) -> Batch:
    """The batch with every pixel at the normalised mean colour (zero), i.e. images with no content."""
    if "pixel_values" not in batch:
        raise ValueError("blanking needs pixel_values (a blank image's features are those of a blank picture)")
    return {**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])}


@contextlib.contextmanager
def _update_ratios(blocks: nn.ModuleList, attention_mask: torch.Tensor, out: list[float]) -> Iterator[None]:
    """Record, for each gated block, the median over real tokens of ‖output − input‖ / ‖input‖."""
    real = attention_mask.bool()  # (b, T)

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        y = args[0].float()  # (b, T, d)
        ratio = (output.float() - y).norm(dim=-1) / y.norm(dim=-1).clamp(min=1e-12)  # (b, T)
        out.append(ratio[real].median().item())

    handles = [block.register_forward_hook(hook) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _nll(model: nn.Module, batch: Batch) -> float:
    return model(**batch, return_logits=False).loss.item()


def _gate(alpha: torch.Tensor) -> float:
    """tanh(α) of a (1,) gate as a number; under FSDP2 α is a sharded DTensor (gathered here, a collective)."""
    alpha = alpha.full_tensor() if hasattr(alpha, "full_tensor") else alpha
    return alpha.tanh().item()


@torch.no_grad()
def measure_vision_use(model: nn.Module, batch: Batch) -> VisionUse:
    """Probe a Flamingo on one labelled batch (``input_ids``, ``attention_mask``, ``pixel_values``,
    ``media_mask``, ``labels``); the model's train/eval mode is left as it was."""
    blocks = model.language_model.gated_xattn
    was_training = model.training
    model.eval()
    try:
        ratios: list[float] = []
        with _update_ratios(blocks, batch["attention_mask"], ratios):
            nll = _nll(model, batch)
        shuffled, blank = _nll(model, shuffle_media(batch)), _nll(model, blank_media(batch))
    finally:
        model.train(was_training)
    return VisionUse(
        nll=nll,
        nll_shuffled=shuffled,
        nll_blank=blank,
        attn_gates=[_gate(block.attn_gate) for block in blocks],
        ff_gates=[_gate(block.ff_gate) for block in blocks],
        update_ratios=ratios,
    )


def mean_vision_use(model: nn.Module, batches: list[Batch]) -> VisionUse:
    """:func:`measure_vision_use` over several batches, each batch weighted by its loss tokens."""
    probes = [measure_vision_use(model, batch) for batch in batches]
    weights = [int((batch["labels"][:, 1:] != -100).sum()) for batch in batches]

    def mean(values: list[float]) -> float:
        return sum(w * v for w, v in zip(weights, values)) / sum(weights)

    return VisionUse(
        nll=mean([p.nll for p in probes]),
        nll_shuffled=mean([p.nll_shuffled for p in probes]),
        nll_blank=mean([p.nll_blank for p in probes]),
        attn_gates=probes[0].attn_gates,
        ff_gates=probes[0].ff_gates,
        update_ratios=[mean(list(r)) for r in zip(*(p.update_ratios for p in probes))],
    )
