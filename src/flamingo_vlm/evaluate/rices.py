"""RICES: Retrieval-based In-Context Example Selection (Yang et al., 2022; Flamingo §3.1).

Support examples are the training examples whose frozen vision features are most similar (cosine)
to the query's.  They are placed in *ascending* similarity, so the most similar example sits
right before the query, where in-context learning weighs it most.

Features are pooled from the model's own frozen vision encoder and cached on disk, keyed by the
encoder's weights and each file's content hash: a support split is encoded once, whichever
directory it is read from, and a re-trained or different encoder never reuses stale features.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from flamingo_vlm.evaluate.media_loading import MediaError, load_media
from flamingo_vlm.io import load_tensors, save_safetensors, sha256_file
from flamingo_vlm.processing import FlamingoProcessor

logger = logging.getLogger(__name__)


class Rices:
    """Nearest support examples of each query by cosine similarity of pooled vision features."""

    def __init__(self, support_features: torch.Tensor, query_features: torch.Tensor) -> None:
        if (
            support_features.ndim != 2
            or query_features.ndim != 2
            or support_features.shape[1] != query_features.shape[1]
        ):
            raise ValueError(
                "features must be (n, d) and (m, d), "
                f"got {tuple(support_features.shape)} and {tuple(query_features.shape)}"
            )
        self.support = F.normalize(support_features.float(), dim=-1)  # (n, d)
        self.queries = F.normalize(query_features.float(), dim=-1)  # (m, d)

    def select(self, query_index: int, k: int, exclude: Collection[int] = ()) -> list[int]:
        """Indices of the ``k`` most similar support examples, least similar first, most similar last."""
        usable = self.support.shape[0] - len(exclude)
        if k > usable:
            raise ValueError(f"{k} support examples needed but the support split has only {usable} usable")
        similarity = self.support @ self.queries[query_index]  # (n,)
        if exclude:
            similarity[list(exclude)] = float("-inf")
        top = similarity.topk(k).indices  # (k,) most similar first
        return top.flip(0).tolist()


class RicesFeatureStore:
    """``{content hash: pooled feature (d,)}`` for one encoder, stored as one safetensors file."""

    def __init__(self, directory: str | Path, fingerprint: str) -> None:
        self.path = Path(directory) / f"rices-{fingerprint}.safetensors"
        self.features: dict[str, torch.Tensor] = {}
        if self.path.is_file():
            try:
                self.features = load_tensors(self.path)
            except ValueError as err:  # a damaged or foreign cache is recomputed, never unpickled
                logger.warning("RICES feature cache unusable, recomputing it: %s", err)
        self._dirty = False

    def __contains__(self, key: str) -> bool:
        return key in self.features

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.features[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.features[key] = value.detach().cpu()
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        save_safetensors(self.features, self.path)  # atomic: a killed run never leaves a truncated cache
        self._dirty = False


@torch.inference_mode()
def pooled_features(
    paths: Sequence[str],
    vision: torch.nn.Module,
    processor: FlamingoProcessor,
    kind: Literal["image", "video"],
    cache: RicesFeatureStore,
    batch_size: int = 64,
) -> tuple[torch.Tensor, set[int]]:
    """Mean-pooled (over frames and visual tokens) features ``(n, d)`` of each media file.

    Returns the features and the indices of files that could not be decoded (their row is zero,
    so they are never the most similar; callers exclude them).
    """
    keys = [sha256_file(p) for p in paths]  # a file's features are keyed by its bytes, not its name
    todo = [i for i, key in enumerate(keys) if key not in cache]
    failed: set[int] = set()
    param = next(vision.parameters())
    for start in range(0, len(todo), batch_size):
        chunk, clips = [], []
        for i in todo[start : start + batch_size]:
            try:
                clips.append(processor.transform_media(load_media(paths[i], kind, processor)))  # (t, c, h, w)
                chunk.append(i)
            except MediaError as err:
                logger.warning("RICES: %s", err)
                failed.add(i)
        if not chunk:
            continue
        frames = torch.cat(clips).to(param.device, param.dtype)  # (sum t, c, h, w)
        tokens = vision(frames).float().mean(dim=1)  # (sum t, d)
        for i, clip_tokens in zip(chunk, tokens.split([c.shape[0] for c in clips])):
            cache[keys[i]] = clip_tokens.mean(dim=0)  # (d,)
    cache.save()
    dim = next((cache[k].shape[0] for k in keys if k in cache), 1)
    rows = [cache[k] if k in cache else torch.zeros(dim) for k in keys]
    return torch.stack(rows), failed  # (n, d)
