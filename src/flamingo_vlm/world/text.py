"""Text for pretraining the language model, and text-only binding probes for its go/no-go check.

A frozen LM decides what Flamingo can do in context: cross-attention lets the text *see* images,
but matching a query to a support example and copying its label is the LM's own self-attention.
So the corpus holds, besides captions and question answering over scene (and motion)
descriptions, the in-context patterns the multimodal tasks need, in text form:

* attribute lists ("a circle, red: red\\na square, blue: blue"): name whichever attribute the
  preceding lines named;
* bindings, defined ("the dax is red. ... the dax is red") or only shown ("a circle, red: dax"),
  with the key word right before the label;
* repeated random token sequences, on which induction heads form.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from flamingo_vlm.world.language import NUMBER_WORDS, caption, indefinite, invented_words, phrase, questions, statement
from flamingo_vlm.world.motion import clip_caption, clip_question, random_clip
from flamingo_vlm.world.scene import ATTRIBUTE_VALUES, COLOURS, SHAPES, SIZES, RenderConfig, Shape, random_scene
from flamingo_vlm.world.seeding import stream

TEXT_KINDS = ("captions", "qa", "motion", "attribute", "binding", "memes", "repeat")

# Only the scene's content matters for text; rendering settings are irrelevant here.
_CONFIG = RenderConfig()


@dataclass(frozen=True)
class TextMix:
    """Relative frequency of each kind of text document."""

    captions: float = 0.15
    qa: float = 0.2
    motion: float = 0.05
    attribute: float = 0.15
    binding: float = 0.25
    memes: float = 0.05
    repeat: float = 0.2

    def __post_init__(self) -> None:
        weights = [getattr(self, k) for k in TEXT_KINDS]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"text kind weights must be >= 0 with a positive sum, got {weights}")


def _keyed(shape: Shape, kind: str) -> str:
    """A description ending with its ``kind`` attribute (colour or shape): the key word right before the label."""
    if kind == "colour":
        return f"{indefinite(shape.shape)} {shape.shape}, {shape.colour}"
    return phrase(shape)


def _shape(rng: random.Random, **fixed: str) -> Shape:
    attributes = {"shape": rng.choice(SHAPES), "colour": rng.choice(tuple(COLOURS)), "size": rng.choice(SIZES)}
    attributes.update(fixed)
    return Shape(x=0.5, y=0.5, **attributes)


def _captions(rng: random.Random) -> str:
    return "\n".join(caption(random_scene(rng, _CONFIG), rng) for _ in range(rng.randint(3, 8)))


def _qa(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(2, 5)):
        scene = random_scene(rng, _CONFIG)
        qa = " ".join(f"Question: {q.question} Answer: {q.answer}" for q in questions(scene, 2, rng))
        lines.append(f"{caption(scene, rng)} {qa}")
    return "\n".join(lines)


def _motion(rng: random.Random) -> str:
    """Motion told in words, then asked about: the text form of video question answering."""
    lines = []
    for _ in range(rng.randint(2, 5)):
        clip = random_clip(rng, _CONFIG)
        question, answer = clip_question(clip, rng)
        lines.append(f"{clip_caption(clip, rng)} Question: {question} Answer: {answer}")
    return "\n".join(lines)


def _attribute(rng: random.Random) -> str:
    kind = rng.choice(("colour", "shape", "size"))
    lines = []
    for _ in range(rng.randint(4, 12)):
        shape = _shape(rng)
        lines.append(f"{phrase(shape, size=True)}: {shape.attribute(kind)}")
    return "\n".join(lines)


def _binding_lines(rng: random.Random, kind: str, words: list[str], values: list[str], n: int) -> list[str]:
    lines = []
    for _ in range(n):
        j = rng.randrange(len(words))
        lines.append(f"{_keyed(_shape(rng, **{kind: values[j]}), kind)}: {words[j]}")
    return lines


def _binding(rng: random.Random) -> str:
    kind = rng.choice(("colour", "shape"))
    values = rng.sample(ATTRIBUTE_VALUES[kind], rng.choice((2, 2, 3)))
    words = invented_words(rng, len(values))
    if rng.random() < 0.4:  # defined, then restated: "the dax is red. the wug is blue. the dax is red."
        facts = [f"the {w} is {v}." for w, v in zip(words, values)]
        picks = [rng.randrange(len(words)) for _ in range(rng.randint(2, 6))]
        uses = [f"the {words[j]} is {values[j]}." for j in picks]
        return " ".join(facts + uses)
    return "\n".join(_binding_lines(rng, kind, words, values, rng.randint(4, 16)))


def _memes(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(2, 5)):
        scene = random_scene(rng, _CONFIG, max_shapes=3)
        lying = rng.random() < 0.5
        text = statement(scene, truth=not lying, rng=rng)
        verdict = "yes" if lying else "no"
        lines.append(
            f'{caption(scene, rng)} is an image with written: "{text}" on it. Is it hateful? Answer: {verdict}'
        )
    return "\n".join(lines)


def _repeat(rng: random.Random) -> str:
    """A random sequence repeated: predicting its second half needs only copying (induction)."""
    vocabulary = [*invented_words(rng, 12), *COLOURS, *SHAPES, *NUMBER_WORDS[1:5]]
    sequence = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(4, 24)))
    return "\n".join([sequence] * rng.randint(2, 4))


_WRITERS: dict[str, Callable[[random.Random], str]] = {
    "captions": _captions,
    "qa": _qa,
    "motion": _motion,
    "attribute": _attribute,
    "binding": _binding,
    "memes": _memes,
    "repeat": _repeat,
}


def text_corpus(seed: int, num_docs: int, mix: TextMix | None = None) -> list[str]:
    """``num_docs`` documents of the world's text (training stream of ``seed``)."""
    mix = mix or TextMix()
    rng = stream(seed, "train", "text")
    kinds = rng.choices(TEXT_KINDS, weights=[getattr(mix, k) for k in TEXT_KINDS], k=num_docs)
    return [_WRITERS[kind](rng) for kind in kinds]


@dataclass(frozen=True)
class TextProbe:
    """A text-only binding episode: does ``prompt`` continue with ``" " + answer`` rather than the other candidates?"""

    prompt: str
    candidates: tuple[str, ...]
    answer: str


def text_binding_probes(seed: int, num: int, shots: int = 8, n_way: int = 2, split: str = "test") -> list[TextProbe]:
    """Binding episodes in the corpus's line format, from the *evaluation* stream of ``seed``.

    Support lines come in blocks holding every word once (balanced prefixes, chance = 1 / n_way);
    the prompt ends with the query's description and ``":"``.
    """
    rng = stream(seed, "eval", "text_binding", split)
    probes = []
    for _ in range(num):
        kind = rng.choice(("colour", "shape"))
        values = rng.sample(ATTRIBUTE_VALUES[kind], n_way)
        words = invented_words(rng, n_way)
        order: list[int] = []
        while len(order) < shots:
            order += rng.sample(range(n_way), n_way)
        lines = [f"{_keyed(_shape(rng, **{kind: values[j]}), kind)}: {words[j]}" for j in order[:shots]]
        j = rng.randrange(n_way)
        lines.append(f"{_keyed(_shape(rng, **{kind: values[j]}), kind)}:")
        probes.append(TextProbe("\n".join(lines), tuple(words), words[j]))
    return probes
