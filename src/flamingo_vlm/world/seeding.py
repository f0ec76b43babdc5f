"""Named random streams: every part of the world draws from its own generator, derived from the seed.

Deriving each stream from ``(seed, name, ...)`` rather than sharing one generator keeps the parts
independent: adding a page kind or resizing one corpus never changes the images of another, and
the evaluation sets (``"eval"`` streams) can never replay the training data (``"train"`` streams).
"""

from __future__ import annotations

import random

import numpy as np


def stream(seed: int, *names: object) -> random.Random:
    """A generator for the stream ``names`` of world ``seed`` (string seeding: stable across runs and platforms)."""
    return random.Random("/".join(map(str, (seed, *names))))


def numpy_rng(rng: random.Random) -> np.random.Generator:
    """A NumPy generator for pixel noise, drawn from (and advancing) a Python stream."""
    return np.random.default_rng(rng.getrandbits(64))
