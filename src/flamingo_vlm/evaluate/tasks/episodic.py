"""Episodic tasks (ShapesWorld-Attribute/-Binding): each query brings its own support examples.

The file format is written by :mod:`flamingo_vlm.world.episodes`; an episode becomes one
:class:`Example` (the query) carrying its support examples and restricted candidates, and its
kind (which attribute the episode is about) in ``fields["kind"]``.  The score is broken down by
kind because one headline number hides where a model fails: a Binding score of 76% was 89% on colour
episodes and chance on shape ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split
from flamingo_vlm.evaluate.tasks.video_qa import score_video_qa


def read_episodic(root: Path, split: str) -> Split:
    from flamingo_vlm.world.episodes import read_episodes  # the format's owner; imported late (no cycle)

    _, episodes = read_episodes(root, split)
    checker = RecordChecker(f"{root.name}/{split}")
    for episode in episodes:
        checker.add(lambda e=episode: replace(
            e.query, id=e.id, fields={**e.query.fields, "kind": e.kind}, support=e.support, candidates=e.candidates,
            label=e.label(),
        ))
    return checker.split()


def score_episodic(examples: Sequence[Example], predictions: Sequence[Prediction], candidates: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy (percent) over all episodes, then per kind as ``top1_{kind}``."""
    scores = score_video_qa(examples, predictions, candidates)
    for kind in sorted({e.fields["kind"] for e in examples}):
        pairs = [(e, p) for e, p in zip(examples, predictions, strict=True) if e.fields["kind"] == kind]
        scores[f"top1_{kind}"] = score_video_qa(*zip(*pairs), candidates)["top1"]
    return scores
