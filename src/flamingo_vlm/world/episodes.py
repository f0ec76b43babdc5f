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

File format (``{root}/{split}.json``; images relative to ``root``)::

    {"task": "shapesworld_binding", "template": "<image>Output: {answer}<|endofchunk|>",
     "candidates": [...],                          # Attribute: every value of every kind
     "episodes": [{"id": "...", "kind": "colour",
                   "support": [{"image": "images/000000_s00.png", "answer": "dax"}, ...],
                   "query": {"image": "images/000000_q.png", "answer": "wug"},
                   "candidates": ["dax", "wug"],      # what restricted scoring ranks
                   "bindings": {"dax": "red", "wug": "blue"}}]}   # Binding only

A k-shot prompt is ``support[:k]`` rendered with the template, then the query cut before ``{answer}``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flamingo_vlm.evaluate.tasks.base import CAPTION_TEMPLATE, Example
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


def write_episodes(
    root: Path, split: str, task: str, episodes: list[EpisodeSpec], config: RenderConfig
) -> Path:
    """Render the episodes' images under ``root/images`` and write ``root/{split}.json``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, episode in enumerate(episodes):
        def item(scene: Scene, answer: str, name: str) -> dict[str, str]:
            path = f"images/{split}_{i:06d}_{name}.png"
            render_scene(scene, config).save(root / path)
            return {"image": path, "answer": answer}

        record: dict[str, Any] = {
            "id": f"{task}-{split}-{i:06d}",
            "kind": episode.kind,
            "support": [item(s, a, f"s{j:02d}") for j, (s, a) in enumerate(episode.support)],
            "query": item(*episode.query, "q"),
            "candidates": list(episode.candidates),
        }
        if episode.bindings:
            record["bindings"] = episode.bindings
        records.append(record)
    candidates = sorted({c for e in episodes for c in e.candidates})
    data = {"task": task, "template": CAPTION_TEMPLATE, "candidates": candidates, "episodes": records}
    path = root / f"{split}.json"
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Episode:
    """One episode as the evaluation harness uses it: a query with its own support examples."""

    id: str
    kind: str
    query: Example
    support: tuple[Example, ...]
    candidates: tuple[str, ...]
    bindings: dict[str, str] = field(default_factory=dict)

    def label(self) -> int:
        """Index of the query's answer among the candidates (restricted scoring)."""
        return self.candidates.index(self.query.answer)


def _example(item: dict, root: Path, id: str) -> Example:
    answer = str(item["answer"]).strip()
    if not answer:
        raise ValueError(f"{id}: empty answer")
    return Example(id=id, media=(str(root / item["image"]),), answer=answer, references=(answer,))


def read_episodes(root: str | Path, split: str = "test") -> tuple[str, list[Episode]]:
    """The template and episodes of ``{root}/{split}.json``; a malformed file raises ``ValueError``."""
    root = Path(root)
    path = root / f"{split}.json"
    if not path.is_file():
        raise ValueError(f"expected the episodes file {path}, which does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        episodes = []
        for record in data["episodes"]:
            support = tuple(_example(s, root, f"{record['id']}/s{j}") for j, s in enumerate(record["support"]))
            episode = Episode(
                id=str(record["id"]),
                kind=str(record["kind"]),
                query=_example(record["query"], root, str(record["id"])),
                support=support,
                candidates=tuple(record["candidates"]),
                bindings=dict(record.get("bindings", {})),
            )
            if episode.query.answer not in episode.candidates:
                raise ValueError(f"{episode.id}: answer {episode.query.answer!r} is not among its candidates")
            episodes.append(episode)
        return str(data["template"]), episodes
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a ShapesWorld episodes file: {err!r}") from err
