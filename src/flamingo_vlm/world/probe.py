"""What the frozen vision encoder can tell apart: linear probes of one shape's attributes.

Flamingo's new layers can only pass on what the frozen encoder's features hold.  Single-shape scenes
with known attributes are encoded, and a logistic regression per attribute is fitted on the
standardised mean-pooled features (the permutation-invariant summary the resampler sees, so a shape's position
counts only if the features themselves carry it) and scored on held-out scenes.  An attribute near
chance here cannot be learnt by Flamingo: the vision counterpart of the LM's go/no-go check.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch import nn

from flamingo_vlm.world.scene import RenderConfig, render_scene, single_shape_scene
from flamingo_vlm.world.seeding import stream

PROBED = ("colour", "shape", "size", "position")


@torch.no_grad()
def vision_probe(
    encoder: nn.Module,
    transform: Callable[[Image.Image], torch.Tensor],
    config: RenderConfig,
    seed: int,
    num_scenes: int = 1500,
    batch_size: int = 250,
) -> dict[str, dict[str, float]]:
    """``{attribute: {"accuracy", "chance"}}`` of linear probes, fitted on 2/3 of the scenes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = stream(seed, "eval", "vision_probe")
    scenes = [single_shape_scene(rng, config) for _ in range(num_scenes)]
    encoder.eval()
    param = next(encoder.parameters())
    features = []
    for start in range(0, num_scenes, batch_size):
        pixels = torch.stack([transform(render_scene(s, config)) for s in scenes[start : start + batch_size]])
        features.append(encoder(pixels.to(param.device, param.dtype)).float().mean(1).cpu())  # (b, d)
    x = torch.cat(features).numpy()  # (n, d)
    split = 2 * num_scenes // 3
    result = {}
    for kind in PROBED:
        y = [s.shapes[0].attribute(kind) for s in scenes]
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[:split], y[:split])
        result[kind] = {"accuracy": float(probe.score(x[split:], y[split:])), "chance": 1 / len(set(y))}
    return result
