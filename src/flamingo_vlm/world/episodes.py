"""ShapesWorld-Attribute and ShapesWorld-Binding: few-shot tasks whose task lives in the prompt.

Both are *episodic*: every query carries its own support examples, because what the support
examples teach differs per query and a shared support pool would mix tasks.

* **Attribute** — each episode picks one attribute kind (colour, shape, size or position); every
  example is ``<image>Output: {value}<|endofchunk|>`` with no question, so only the support
  examples say which attribute to name.  Zero-shot is the query alone.
* **Binding** — each episode invents ``n_way`` words and binds each to one colour (or shape) for
  that episode only; the answer is the word bound to the query's colour (or shape).  The support
  list is ordered in blocks that hold every word once, so any prefix of ``k * n_way`` examples is
  balanced.  Zero-shot is at chance by construction; scoring is restricted to the episode's words.

The file format, and its reader, belong to the evaluation harness
(:mod:`flamingo_vlm.evaluate.tasks.episodic`); this module only generates and renders episodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from flamingo_vlm.evaluate.tasks.base import CAPTION_TEMPLATE
from flamingo_vlm.evaluate.tasks.episodic import episode_record, write_episodes_file
from flamingo_vlm.world.language import invented_words
from flamingo_vlm.world.scene import ATTRIBUTE_VALUES, RenderConfig, Scene, render_scene, single_shape_scene

ATTRIBUTE_TASK_KINDS = ("colour", "shape", "size", "position")
BINDING_KINDS = ("colour", "shape")


@dataclass(frozen=True)
class EpisodeSpec:
    """An episode before rendering: scenes with their answers."""

    kind: str
    support: tuple[tuple[Scene, str], ...]
    query: tuple[Scene, str]
    candidates: tuple[str, ...]
    bindings: dict[str, str] = field(default_factory=dict)


def attribute_episode(rng: random.Random, config: RenderConfig, shots: int) -> EpisodeSpec:
    kind = rng.choice(ATTRIBUTE_TASK_KINDS)

    def example() -> tuple[Scene, str]:
        scene = single_shape_scene(rng, config)
        return scene, scene.shapes[0].attribute(kind)

    candidates = tuple(v for k in ATTRIBUTE_TASK_KINDS for v in ATTRIBUTE_VALUES[k])
    return EpisodeSpec(kind, tuple(example() for _ in range(shots)), example(), candidates)


def binding_episode(rng: random.Random, config: RenderConfig, shots: int, n_way: int = 2) -> EpisodeSpec:
    kind = rng.choice(BINDING_KINDS)
    values = rng.sample(ATTRIBUTE_VALUES[kind], n_way)
    words = invented_words(rng, n_way)
    order: list[int] = []
    while len(order) < shots:  # blocks holding every word once: every prefix of k * n_way is balanced
        order += rng.sample(range(n_way), n_way)

    def example(j: int) -> tuple[Scene, str]:
        return single_shape_scene(rng, config, **{kind: values[j]}), words[j]

    support = tuple(example(j) for j in order[:shots])
    return EpisodeSpec(kind, support, example(rng.randrange(n_way)), tuple(words), dict(zip(words, values)))


def write_episodes(root: Path, split: str, task: str, episodes: list[EpisodeSpec], config: RenderConfig) -> Path:
    """Render the episodes' images under ``root/images`` and write ``root/{split}.json``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []

    def item(i: int, scene: Scene, answer: str, name: str) -> tuple[str, str]:
        path = f"images/{split}_{i:06d}_{name}.png"
        render_scene(scene, config).save(root / path)
        return path, answer

    for i, episode in enumerate(episodes):
        records.append(
            episode_record(
                id=f"{task}-{split}-{i:06d}",
                kind=episode.kind,
                support=[item(i, s, a, f"s{j:02d}") for j, (s, a) in enumerate(episode.support)],
                query=item(i, *episode.query, "q"),
                candidates=episode.candidates,
                bindings=episode.bindings,
            )
        )
    return write_episodes_file(root, split, task, CAPTION_TEMPLATE, records)
