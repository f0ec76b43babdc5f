"""Perceiver Resampler (paper §2.1, Fig. 5): any number of visual features → a fixed set of tokens.

The vision encoder produces a variable number of features per image (and per video frame); the
LM's cross-attention wants a small, fixed number. A set of learned latent queries attends over the
flattened features of all frames (plus a learned embedding per frame, so time is not lost), and the
keys/values are the features *concatenated with the latents*, which lets latents also exchange
information with each other, as in the paper's pseudo-code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flamingo_vlm.config import Activation
from flamingo_vlm.model.feedforward import FeedForward


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x: (B, m, d) visual features; latents: (B, n, d) → (B, n, d)."""
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)  # (B, n, h·dh)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)  # (B, m+n, h·dh) each
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, h, ·, dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, n, dh)
        return self.to_out(out.transpose(1, 2).flatten(2))  # (B, n, d)


class PerceiverResampler(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int = 6,
        num_latents: int = 64,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        max_frames: int = 8,
        activation: Activation = "squared_relu",
        use_time_embeddings: bool = True,
        latent_std: float = 1.0,
    ) -> None:
        """``latent_std``: the learned latents' initial scale. Each layer *adds* what it read from the media
        to the latents, so latents of std 1 (OpenFlamingo's, lucidrains') drown it: at initialisation the
        output barely differs between images, and the gated blocks see every image alike (measured in
        docs/results.md). Small latents let the media dominate from the first step."""
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * latent_std)
        # Off only to reproduce models trained without them (OpenFlamingo): frames are then unordered.
        time_embeddings = nn.Parameter(torch.randn(max_frames, dim) * 0.02) if use_time_embeddings else None
        self.register_parameter("time_embeddings", time_embeddings)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head), FeedForward(dim, ff_mult, activation)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def max_frames(self) -> int:
        return self.time_embeddings.shape[0]

    def time_embeddings_for(self, num_frames: int) -> torch.Tensor:
        """(t, d) temporal embeddings; linearly interpolated when t exceeds the trained frames.

        The paper trains on 8 frames and evaluates on 30 by interpolating these embeddings.
        """
        emb = self.time_embeddings  # (T, d)
        if num_frames <= self.max_frames:
            return emb[:num_frames]
        if self.max_frames == 1:
            return emb.expand(num_frames, -1)
        stretched = F.interpolate(emb.T.unsqueeze(0), size=num_frames, mode="linear", align_corners=True)
        return stretched.squeeze(0).T  # (t, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b, n_media, t, v, d) features → (b, n_media, n_latents, d) visual tokens."""
        b, n, t, v, d = x.shape
        if self.time_embeddings is not None:
            x = x + self.time_embeddings_for(t).unsqueeze(1)  # (b, n, t, v, d)
        x = x.reshape(b * n, t * v, d)  # frames flattened: each latent sees every frame
        latents = self.latents.expand(b * n, -1, -1)  # (b·n, L, d)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents)
            latents = latents + ff(latents)
        return self.norm(latents).unflatten(0, (b, n))  # (b, n, L, d)
