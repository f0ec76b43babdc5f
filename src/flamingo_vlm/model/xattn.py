"""Gated cross-attention dense blocks (paper §2.2, Fig. 4): how a frozen LM starts to see.

Each block is inserted before a frozen decoder layer. Its outputs are scaled by ``tanh(gate)``
with the gates initialised at 0 (or, as an option, open over zero-initialised output projections), so at
initialisation the model *is* the frozen LM and training starts from its full language ability instead
of from a randomly perturbed one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flamingo_vlm.config import Activation
from flamingo_vlm.model.feedforward import FeedForward

MediaKV = tuple[torch.Tensor, torch.Tensor]
GATE_NAMES = ("attn_gate", "ff_gate")


class MaskedCrossAttention(nn.Module):
    """Text queries attend to the visual tokens of the media each token may see.

    Visual keys/values are projected by :meth:`project_media` separately from the attention
    itself, so generation can project them once per prompt and reuse them at every step.
    """

    def __init__(self, dim: int, dim_visual: int, heads: int = 8, dim_head: int = 64, qk_norm: bool = False) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.q_norm = nn.LayerNorm(dim_head) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim_head) if qk_norm else nn.Identity()

    def project_media(self, media: torch.Tensor) -> MediaKV:
        """media: (b, n_media, n_latents, d_vis) → keys, values, each (b, h, n_media·n_latents, dh).

        Contiguous copies, not views of the projection: FSDP2 (which wraps this method) cannot see an
        in-place op on a view output, and warns about every one; the keys/values are read at every step.
        """
        k, v = self.to_kv(media.flatten(1, 2)).chunk(2, dim=-1)  # (b, n·L, h·dh), each a view
        k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2).contiguous() for t in (k, v))
        return self.k_norm(k), v

    def forward(self, x: torch.Tensor, media_kv: MediaKV, attend: torch.Tensor) -> torch.Tensor:
        """x: (b, L, d) text; attend: (b, L, n_media) which media each token sees → (b, L, d).

        Tokens that see no media (φ = 0) get an output of exact zeros: masking every key would
        make the softmax undefined, so they attend to everything and are zeroed afterwards.
        """
        k, v = media_kv
        b, L, n_media = attend.shape
        if n_media == 0:
            return torch.zeros_like(x)
        q = self.q_norm(self.to_q(self.norm(x)).unflatten(-1, (self.heads, -1)).transpose(1, 2))  # (b, h, L, dh)
        sees_media = attend.any(dim=-1, keepdim=True)  # (b, L, 1)
        num_latents = k.shape[2] // n_media
        mask = (attend | ~sees_media).repeat_interleave(num_latents, dim=-1)  # (b, L, n·L_lat)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask.unsqueeze(1))
        out = self.to_out(out.transpose(1, 2).flatten(2))  # (b, L, d)
        return out.masked_fill(~sees_media, 0.0)


class GatedCrossAttentionDense(nn.Module):
    """y ← y + tanh(α_attn)·s·xattn(y, media);  y ← y + tanh(α_ff)·s·ffw(y).

    ``s`` is 1 in the paper. With ``residual_scaled=True`` it is a fixed per-block constant, the
    median per-token RMS of the frozen LM's residual stream where the block sits (calibrated once
    by :meth:`Flamingo.calibrate_output_scales` and saved with the model). The branches read a
    LayerNorm-ed input and so produce outputs of RMS about 1, while a pretrained LM's residual
    stream is typically 10–100× larger: unscaled, a fully open gate still moves the stream by a few
    percent, and the LM never notices the image. Identity at initialisation is untouched (α = 0).

    ``gate_init`` ≠ 0 starts the gates open (tanh(α) = tanh(gate_init)) and each branch's output
    projection at zero instead, so the block is still the identity at initialisation. Why: with
    α = 0 the branch weights get no gradient until the scalar gate has grown, and the gate grows only
    once the (random) branch output happens to help, a chicken-and-egg start that can take hundreds
    of steps. A zero output projection gets a full-rank gradient from step 1 (the LoRA/ControlNet
    "zero-init" start).
    """

    def __init__(
        self,
        dim: int,
        dim_visual: int,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        activation: Activation = "squared_relu",
        qk_norm: bool = False,
        residual_scaled: bool = False,
        gate_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_visual, heads, dim_head, qk_norm)
        # Gates of shape (1,), as in lucidrains' and OpenFlamingo's code: FSDP2 cannot shard 0-d tensors.
        self.attn_gate = nn.Parameter(torch.full((1,), float(gate_init)))
        self.ff = FeedForward(dim, ff_mult, activation)
        self.ff_gate = nn.Parameter(torch.full((1,), float(gate_init)))
        if gate_init != 0.0:
            nn.init.zeros_(self.attn.to_out.weight)  # (d, h·dh)
            nn.init.zeros_(self.ff[-1].weight)  # (d, mult·d)
        self.output_scale: torch.Tensor | None
        self.register_buffer("output_scale", torch.tensor(1.0) if residual_scaled else None)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Checkpoints written before the gates had shape (1,) hold 0-d gates: reshape them on load."""
        for name in GATE_NAMES:
            key = prefix + name
            if key in state_dict and state_dict[key].ndim == 0:
                state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, y: torch.Tensor, media_kv: MediaKV, attend: torch.Tensor) -> torch.Tensor:
        """y: (b, L, d) hidden states of the frozen LM; returns the same shape and dtype."""
        dtype = y.dtype
        y = y.to(self.attn_gate.dtype)
        attn_gate, ff_gate = self.attn_gate.tanh(), self.ff_gate.tanh()  # (1,) each, broadcast over (b, L, d)
        if self.output_scale is not None:
            attn_gate, ff_gate = attn_gate * self.output_scale, ff_gate * self.output_scale
        y = y + attn_gate * self.attn(y, media_kv, attend)
        y = y + ff_gate * self.ff(y)
        return y.to(dtype)
