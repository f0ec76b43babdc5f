"""Episodic tasks (ShapesWorld-Attribute/-Binding): each query brings its own support examples.

The file format is written by :mod:`flamingo_vlm.world.episodes`; an episode becomes one
:class:`Example` (the query) carrying its support examples and restricted candidates.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from flamingo_vlm.evaluate.tasks.base import RecordChecker, Split


def read_episodic(root: Path, split: str) -> Split:
    from flamingo_vlm.world.episodes import read_episodes  # the format's owner; imported late (no cycle)

    _, episodes = read_episodes(root, split)
    checker = RecordChecker(f"{root.name}/{split}")
    for episode in episodes:
        checker.add(lambda e=episode: replace(
            e.query, id=e.id, support=e.support, candidates=e.candidates, label=e.label()
        ))
    return checker.split()
