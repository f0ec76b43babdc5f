"""Frozen-feature cache: vision features computed once per image, stored on disk by content hash.

The vision encoder is frozen and training uses no augmentation, so an image's features are a pure
function of its pixels: computing them every epoch is wasted work (most of a step's FLOPs at high
resolution). Features are keyed by a hash of the encoder's identity and of the transformed pixels,
so a changed encoder, resolution or normalisation never reads a stale entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from flamingo_vlm.io import load_tensors, save_safetensors
from flamingo_vlm.model.vision import encoder_fingerprint


class VisionFeatureCache:
    """``pixel_values (b, n, t, c, h, w)`` → ``vision_features (b, n, t, v, d)``, computing only misses."""

    def __init__(self, directory: str | Path, vision: nn.Module) -> None:
        self.vision = vision
        self.directory = Path(directory) / encoder_fingerprint(vision)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _path(self, pixels: torch.Tensor) -> Path:
        """pixels: (t, c, h, w) of one media item → its cache file (sharded in 256 sub-directories)."""
        digest = hashlib.sha256(json.dumps([list(pixels.shape), str(pixels.dtype)]).encode())
        digest.update(pixels.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        key = digest.hexdigest()
        return self.directory / key[:2] / f"{key}.safetensors"

    def _load(self, path: Path) -> torch.Tensor | None:
        try:
            return load_tensors(path)["features"]
        except (ValueError, KeyError):  # absent, or truncated by a crash elsewhere
            return None

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor, media_mask: torch.Tensor) -> torch.Tensor:
        """Features of the real media slots; padding slots stay zero (the model never reads them)."""
        real = pixel_values[media_mask.bool()]  # (n_real, t, c, h, w)
        paths = [self._path(p) for p in real]
        found = [self._load(p) for p in paths]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            param = next(self.vision.parameters())
            pixels = real[missing]  # (m, t, c, h, w)
            computed = self.vision(pixels.flatten(0, 1).to(param.device, param.dtype))  # (m·t, v, d)
            computed = computed.unflatten(0, pixels.shape[:2]).float().cpu()  # (m, t, v, d)
            for i, features in zip(missing, computed):
                save_safetensors({"features": features}, paths[i])
                found[i] = features
        self.hits += len(real) - len(missing)
        self.misses += len(missing)
        stacked = torch.stack(found)  # (n_real, t, v, d)
        out = stacked.new_zeros(*media_mask.shape, *stacked.shape[1:])  # (b, n, t, v, d)
        out[media_mask.bool().cpu()] = stacked
        return out

    def replace_pixels(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with ``pixel_values`` swapped for ``vision_features``."""
        batch = dict(batch)
        batch["vision_features"] = self.features(batch.pop("pixel_values"), batch["media_mask"])
        return batch
