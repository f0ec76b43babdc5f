"""Episodic tasks (ShapesWorld-Attribute/-Binding): each query brings its own support examples.

This module owns the episodes file format: :func:`read_episodes` parses it, and a data generator
(ShapesWorld's, for one) writes it with :func:`episode_record` and :func:`write_episodes_file`, so
that reader and writer cannot drift apart and the library never depends on the generator.

File format (``{root}/{split}.json``; images relative to ``root``)::

    {"task": "shapesworld_binding", "template": "<image>Output: {answer}<|endofchunk|>",
     "candidates": [...],                          # every episode's candidates, sorted
     "episodes": [{"id": "...", "kind": "colour",
                   "support": [{"image": "images/000000_s00.png", "answer": "dax"}, ...],
                   "query": {"image": "images/000000_q.png", "answer": "wug"},
                   "candidates": ["dax", "wug"],      # what restricted scoring ranks
                   "bindings": {"dax": "red", "wug": "blue"}}]}   # optional (Binding)

A k-shot prompt is ``support[:k]`` rendered with the template, then the query cut before ``{answer}``.

For the harness an episode becomes one :class:`Example` (the query) carrying its support examples and
restricted candidates, and its kind (which attribute the episode is about) in ``fields["kind"]``.
The score is broken down by kind because one headline number hides where a model fails: a model can
name colours well and shapes at chance, and the average says neither.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split
from flamingo_vlm.evaluate.tasks.video_qa import score_video_qa
from flamingo_vlm.io import MAX_ANNOTATION_BYTES, read_json


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


def episode_record(
    id: str,
    kind: str,
    support: Sequence[tuple[str, str]],
    query: tuple[str, str],
    candidates: Sequence[str],
    bindings: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One entry of the file's ``episodes`` list; ``support`` and ``query`` are (image path, answer) pairs."""
    record: dict[str, Any] = {
        "id": id,
        "kind": kind,
        "support": [{"image": image, "answer": answer} for image, answer in support],
        "query": {"image": query[0], "answer": query[1]},
        "candidates": list(candidates),
    }
    if bindings:
        record["bindings"] = dict(bindings)
    return record


def write_episodes_file(root: Path, split: str, task: str, template: str, records: Sequence[dict[str, Any]]) -> Path:
    """Write ``root/{split}.json`` from :func:`episode_record` entries; the images must already be there."""
    candidates = sorted({c for record in records for c in record["candidates"]})
    data = {"task": task, "template": template, "candidates": candidates, "episodes": list(records)}
    path = root / f"{split}.json"
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


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
        data = read_json(path, MAX_ANNOTATION_BYTES)
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
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a ShapesWorld episodes file: {err!r}") from err


def read_episodic(root: Path, split: str) -> Split:
    _, episodes = read_episodes(root, split)
    checker = RecordChecker(f"{root.name}/{split}")
    for episode in episodes:
        checker.add(
            lambda e=episode: replace(
                e.query,
                id=e.id,
                fields={**e.query.fields, "kind": e.kind},
                support=e.support,
                candidates=e.candidates,
                label=e.label(),
            )
        )
    return checker.split()


def score_episodic(
    examples: Sequence[Example], predictions: Sequence[Prediction], candidates: Sequence[str]
) -> dict[str, float]:
    """Top-1 accuracy (percent) over all episodes, then per kind as ``top1_{kind}``."""
    scores = score_video_qa(examples, predictions, candidates)
    for kind in sorted({e.fields["kind"] for e in examples}):
        pairs = [(e, p) for e, p in zip(examples, predictions, strict=True) if e.fields["kind"] == kind]
        scores[f"top1_{kind}"] = score_video_qa(*zip(*pairs), candidates)["top1"]
    return scores
