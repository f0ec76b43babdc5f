"""What is said about a scene: captions in several phrasings, questions with answers, true or false
statements, and invented words.

Everything here is a pure function of a scene and a generator, so the same scene always gets the
same sentences from the same stream.  Questions are only asked when their answer is unique (a
colour question names a shape type that occurs once), because a benchmark with ambiguous
references would measure the annotation, not the model.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from flamingo_vlm.world.scene import COLOURS, SHAPES, Scene, Shape

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION_KINDS = ("colour", "shape", "count", "position", "existence")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "bl", "gr", "tr", "sn", "pl", "dr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "x", "p", "k", "t", "n", "m", "sh", "ck")
# Invented words must never collide with a word that has a meaning in the world.
_RESERVED = frozenset({*COLOURS, *SHAPES, "small", "large", "top", "left", "right", "bottom", "center", "yes", "no"})


def indefinite(word: str) -> str:
    """The indefinite article before ``word``."""
    return "an" if word[0] in "aeiou" else "a"


def phrase(shape: Shape, size: bool = False, texture: bool = False, article: str = "a") -> str:
    """``"a small striped red circle"``; size and texture only when asked for."""
    words = [article] if article else []
    if size:
        words.append(shape.size)
    if texture and shape.texture != "plain":
        words.append(shape.texture)
    words += [shape.colour, shape.shape]
    if words[0] == "a":
        words[0] = indefinite(words[1])
    return " ".join(words)


def where(shape: Shape) -> str:
    """``"at the top left"``, ``"on the right"``, ``"in the center"``."""
    position = shape.position
    if position == "center":
        return "in the center"
    return f"on the {position}" if position in ("left", "right") else f"at the {position}"


def join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _ordered(scene: Scene) -> list[Shape]:
    """Shapes in reading order (top to bottom, left to right)."""
    return sorted(scene.shapes, key=lambda s: s.cell)


_CAPTION_STYLES: tuple[Callable[[Scene], str], ...] = (
    lambda sc: join([phrase(s) for s in _ordered(sc)]) + ".",
    lambda sc: join([phrase(s, size=True) for s in _ordered(sc)]) + ".",
    lambda sc: join([f"{phrase(s)} {where(s)}" for s in _ordered(sc)]) + ".",
    lambda sc: (
        f"{NUMBER_WORDS[len(sc.shapes)]} {'shape' if len(sc.shapes) == 1 else 'shapes'}: "
        + join([phrase(s, texture=True) for s in _ordered(sc)])
        + "."
    ),
    lambda sc: "an image of " + join([phrase(s, size=True, texture=True) for s in _ordered(sc)]) + ".",
    lambda sc: (
        ("there is " if len(sc.shapes) == 1 else "there are ")
        + join([f"{phrase(s, size=True)} {where(s)}" for s in _ordered(sc)])
        + "."
    ),
)
NUM_CAPTION_STYLES = len(_CAPTION_STYLES)


def caption(scene: Scene, rng: random.Random) -> str:
    """One caption in a randomly chosen phrasing."""
    return rng.choice(_CAPTION_STYLES)(scene)


def captions(scene: Scene, k: int, rng: random.Random) -> list[str]:
    """``k`` captions in distinct phrasings (the reference captions of a captioning benchmark)."""
    if not 1 <= k <= NUM_CAPTION_STYLES:
        raise ValueError(f"k must be in 1..{NUM_CAPTION_STYLES}, got {k}")
    return [style(scene) for style in rng.sample(_CAPTION_STYLES, k)]


@dataclass(frozen=True)
class Question:
    """A question with its answer; ``question_type``/``answer_type`` as in the VQA annotations."""

    kind: str
    question: str
    answer: str
    question_type: str
    answer_type: str


def _unique(scene: Scene, key: Callable[[Shape], object]) -> list[Shape]:
    counts = Counter(key(s) for s in scene.shapes)
    return [s for s in scene.shapes if counts[key(s)] == 1]


def _ask_colour(scene: Scene, rng: random.Random) -> Question | None:
    if len(scene.shapes) == 1 and rng.random() < 0.3:
        return Question("colour", "What color is the shape?", scene.shapes[0].colour, "what color is the", "other")
    candidates = _unique(scene, lambda s: s.shape)
    if not candidates:
        return None
    s = rng.choice(candidates)
    return Question("colour", f"What color is the {s.shape}?", s.colour, "what color is the", "other")


def _ask_shape(scene: Scene, rng: random.Random) -> Question | None:
    candidates = _unique(scene, lambda s: s.colour)
    if not candidates:
        return None
    s = rng.choice(candidates)
    text = rng.choice((f"What shape is the {s.colour} object?", f"Which shape is {s.colour}?"))
    return Question("shape", text, s.shape, "what shape is", "other")


def _ask_count(scene: Scene, rng: random.Random) -> Question:
    if rng.random() < 0.5:
        return Question("count", "How many shapes are there?", str(len(scene.shapes)), "how many", "number")
    colour = rng.choice(tuple(COLOURS))
    n = sum(s.colour == colour for s in scene.shapes)
    return Question("count", f"How many {colour} shapes are there?", str(n), "how many", "number")


def _ask_position(scene: Scene, rng: random.Random) -> Question | None:
    candidates = _unique(scene, lambda s: (s.colour, s.shape))
    if not candidates:
        return None
    s = rng.choice(candidates)
    return Question("position", f"Where is the {s.colour} {s.shape}?", s.position, "where is the", "other")


def absent_thing(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A (colour, shape) pair not in the scene, sharing one attribute with a present shape when possible."""
    present = {(s.colour, s.shape) for s in scene.shapes}
    anchor = rng.choice(scene.shapes)
    near = [(c, anchor.shape) for c in COLOURS] + [(anchor.colour, sh) for sh in SHAPES]
    options = [p for p in near if p not in present]
    return rng.choice(options or [(c, sh) for c in COLOURS for sh in SHAPES if (c, sh) not in present])


def _ask_existence(scene: Scene, rng: random.Random) -> Question:
    if rng.random() < 0.5:
        s = rng.choice(scene.shapes)
        colour, shape, answer = s.colour, s.shape, "yes"
    else:
        (colour, shape), answer = absent_thing(scene, rng), "no"
    return Question("existence", f"Is there {indefinite(colour)} {colour} {shape}?", answer, "is there a", "yes/no")


_ASKERS: dict[str, Callable[[Scene, random.Random], Question | None]] = {
    "colour": _ask_colour,
    "shape": _ask_shape,
    "count": _ask_count,
    "position": _ask_position,
    "existence": _ask_existence,
}


def ask(scene: Scene, kind: str, rng: random.Random) -> Question | None:
    """A question of ``kind`` about the scene, or None when no unambiguous one exists."""
    if kind not in _ASKERS:
        raise ValueError(f"unknown question kind {kind!r}; choose from {QUESTION_KINDS}")
    return _ASKERS[kind](scene, rng)


def questions(scene: Scene, k: int, rng: random.Random) -> list[Question]:
    """Up to ``k`` questions of distinct kinds (fewer when some kinds have no unambiguous question)."""
    asked = (ask(scene, kind, rng) for kind in rng.sample(QUESTION_KINDS, len(QUESTION_KINDS)))
    return [q for q in asked if q is not None][:k]


def statement(scene: Scene, truth: bool, rng: random.Random) -> str:
    """A sentence about the scene that is true (``truth``) or false of it: what a meme writes on its image."""
    kind = rng.choice(("existence", "count", "colour", "absence"))
    if kind == "colour" and not _unique(scene, lambda s: s.shape):
        kind = "existence"
    if kind == "existence":
        if truth:
            s = rng.choice(scene.shapes)
            return f"there is {phrase(s)}"
        colour, shape = absent_thing(scene, rng)
        return f"there is {phrase(Shape(shape, colour, 'small', 0, 0))}"
    if kind == "absence":
        if truth:
            colour, shape = absent_thing(scene, rng)
            return f"there is no {colour} {shape}"
        present = rng.choice(scene.shapes)
        return f"there is no {present.colour} {present.shape}"
    if kind == "count":
        n = len(scene.shapes)
        shown = n if truth else rng.choice([m for m in range(1, 5) if m != n])
        return f"there {'is' if shown == 1 else 'are'} {NUMBER_WORDS[shown]} {'shape' if shown == 1 else 'shapes'}"
    s = rng.choice(_unique(scene, lambda s: s.shape))
    colour = s.colour if truth else rng.choice([c for c in COLOURS if c != s.colour])
    return f"the {s.shape} is {colour}"


def invented_words(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct pronounceable nonsense words ("dax", "blicket"-like) that mean nothing in the world."""
    words: list[str] = []
    while len(words) < k:
        syllables = rng.choice((1, 2, 2))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if word not in _RESERVED and word not in words:
            words.append(word)
    return words
