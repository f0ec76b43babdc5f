"""What the frozen parts can do before Flamingo trains: vision probes, and the LM's go/no-go binding check.

The vision probes: linear probes of one shape's attributes.

Flamingo's new layers can only pass on what the frozen encoder's features hold.  Single-shape scenes
with known attributes are encoded, and a logistic regression per attribute is fitted on the
standardised mean-pooled features (the permutation-invariant summary the resampler sees, so a shape's position
counts only if the features themselves carry it) and scored on held-out scenes.  An attribute near
chance here cannot be learnt by Flamingo: the vision counterpart of the LM's go/no-go check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

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


@torch.no_grad()
def text_binding_accuracy(model: nn.Module, tokenizer, probes_path: Path, limit: int | None = None) -> dict[str, float]:
    """Share of the world's text-only binding probes whose answer the LM scores above the other candidates.

    The LM's go/no-go check: Flamingo's cross-attention only brings the images in; matching a query to its
    support examples and copying the answer is the frozen LM's in-context skill, so an LM that cannot bind
    in text cannot make ShapesWorld-Binding emerge in Flamingo.
    """
    probes = [json.loads(line) for line in probes_path.read_text().splitlines() if line.strip()][:limit]
    correct, chance = 0, 0.0
    model.eval()
    for probe in probes:
        prompt = tokenizer(probe["prompt"], add_special_tokens=False).input_ids
        scores = []
        for candidate in probe["candidates"]:
            cont = tokenizer(" " + candidate, add_special_tokens=False).input_ids
            ids = torch.tensor([prompt + cont])
            logprobs = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)  # (t - 1, vocab)
            scores.append(sum(logprobs[len(prompt) - 1 + i, t].item() for i, t in enumerate(cont)))
        correct += probe["candidates"][max(range(len(scores)), key=scores.__getitem__)] == probe["answer"]
        chance += 1 / len(probe["candidates"])
    return {"accuracy": correct / len(probes), "chance": chance / len(probes)}
