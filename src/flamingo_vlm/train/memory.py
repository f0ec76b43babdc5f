"""Activation checkpointing of the frozen LM's decoder layers.

The gated blocks run from forward *pre-hooks* on the decoder layers and read the visual tokens
from a :class:`~flamingo_vlm.model.language.MediaScope` that exists only during the forward pass.
Wrapping a whole layer call in ``torch.utils.checkpoint`` (as ``checkpoint_wrapper`` or HF's
gradient checkpointing do) would re-run that pre-hook during backward, outside the scope.

Instead only the layer's own ``forward`` is checkpointed: ``nn.Module.__call__`` runs the pre-hook
(the gated block, activations stored as usual) *before* calling ``forward``, so the recomputation
in backward replays the frozen layer's math alone and never touches the scope. The frozen layers
hold most of the activations; the small gated blocks keep theirs.
"""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint

from flamingo_vlm.model.language import find_decoder_layers


def checkpoint_decoder_layers(model: nn.Module) -> int:
    """Recompute each frozen decoder layer of a ``Flamingo`` in backward; returns how many.

    Idempotent. Non-reentrant checkpointing: correct with inputs that need no grad, keyword
    arguments (HF layers take position embeddings and masks as kwargs) and DDP/FSDP.
    """
    layers = find_decoder_layers(model.lm, model.config.decoder_layers_attr)
    for layer in layers:
        if getattr(layer, "_flamingo_checkpointed", False):
            continue
        forward = layer.forward  # the bound class method: what __call__ runs after the pre-hooks
        layer.forward = functools.partial(checkpoint, forward, use_reentrant=False)
        layer._flamingo_checkpointed = True
    return len(layers)
