"""φ, the last-preceding-media index, the cross-attention mask it induces, and padding-aware positions.

Flamingo's text tokens do not attend to every image: token ℓ attends to the visual tokens of
φ(ℓ), the last ``<image>`` at or before ℓ (paper §2.3). This keeps the model's view of each image
local while letting the frozen LM's self-attention carry earlier images forward, and lets a model
trained on 5 images per sequence run on 32 at evaluation time.
"""

from __future__ import annotations

import torch

from flamingo_vlm.config import MediaAttention


def last_media_index(input_ids: torch.Tensor, media_token_id: int) -> torch.Tensor:
    """φ for every token: 1-based index of the last media token at or before it, 0 if none.

    Left or right padding does not matter: padding tokens are not media tokens, so they only
    repeat the φ of the token before them (or 0), and padded positions are masked downstream.
    """
    return (input_ids == media_token_id).long().cumsum(dim=-1)  # (b, L)


def media_attention_mask(phi: torch.Tensor, num_media: int, mode: MediaAttention) -> torch.Tensor:
    """Which media slot each token may attend to: ``(b, L, n_media)`` booleans.

    ``previous``: only slot φ(ℓ); ``all_previous``: slots 1..φ(ℓ). Tokens with φ=0 attend to none;
    the cross-attention turns their output into exact zeros rather than a softmax over nothing.
    """
    slots = torch.arange(1, num_media + 1, device=phi.device)  # (n,)
    phi = phi.unsqueeze(-1)  # (b, L, 1)
    if mode == "previous":
        return phi == slots
    if mode == "all_previous":
        return (slots <= phi) & (phi > 0)
    raise ValueError(f"unknown media_attention mode {mode!r}")


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding, so a padded row matches its unpadded self (RoPE too).

    attention_mask (b, T) → (b, T); a cached decoding step takes the last column.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (b, T)
