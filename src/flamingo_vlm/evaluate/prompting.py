"""Few-shot prompts in Flamingo's format, and the choice of their support examples.

A template is one example with an ``{answer}`` slot, e.g.
``"<image>Question: {question} Answer: {answer}<|endofchunk|>"``.  A prompt is the rendered
support examples followed by the query rendered up to the slot (``"...Answer:"``), so that the
model's continuation (generated, or a scored candidate such as ``" yes<|endofchunk|>"``) is what
the support examples taught it to write there.

Zero-shot follows the paper: the prompt still holds two support examples, with their images
removed, so the model learns the answer *format* without seeing any image-answer pair.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from flamingo_vlm.evaluate.tasks.base import Example
from flamingo_vlm.processing import field_labels
from flamingo_vlm.tokenization import MEDIA_TOKEN

ANSWER_SLOT = "{answer}"
ZERO_SHOT_TEXT_EXAMPLES = 2


@dataclass(frozen=True)
class PromptTemplate:
    """An example template split at its ``{answer}`` slot."""

    template: str

    def __post_init__(self) -> None:
        if self.template.count(ANSWER_SLOT) != 1:
            raise ValueError(f"a template needs exactly one {ANSWER_SLOT} slot, got {self.template!r}")
        if self.template.count(MEDIA_TOKEN) != 1:
            raise ValueError(f"a template needs exactly one {MEDIA_TOKEN} marker, got {self.template!r}")

    @property
    def _parts(self) -> tuple[str, str]:
        before, after = self.template.split(ANSWER_SLOT)
        return before, after

    def render(self, example: Example, with_media: bool = True) -> str:
        """The full support example; without media its ``<image>`` marker is dropped (zero-shot)."""
        before, after = self._parts
        text = before.format(**example.fields) + example.answer + after.format(**example.fields)
        return text if with_media else text.replace(MEDIA_TOKEN, "")

    def query(self, example: Example) -> str:
        """The query, cut before the answer and its leading whitespace (which belongs to the answer's tokens)."""
        return self._parts[0].format(**example.fields).rstrip()

    @property
    def labels(self) -> tuple[str, ...]:
        """The template's field labels: where a generated answer ends (``batch_decode(stop_labels=...)``)."""
        return field_labels(self.template)

    def continuation(self, answer: str, example: Example) -> str:
        """What follows :meth:`query` when the answer is ``answer``: a candidate of close-ended tasks."""
        before, after = self._parts
        separator = before[len(before.rstrip()) :]
        return separator + answer + after.format(**example.fields)


@dataclass(frozen=True)
class Prompt:
    """A prompt text and its media paths, in the order of its ``<image>`` markers."""

    text: str
    media: tuple[str, ...]


def build_prompt(
    template: PromptTemplate, query: Example, support: Sequence[Example], text_only_support: bool = False
) -> Prompt:
    """Support examples in the given order, then the query (whose media always comes last)."""
    context = "".join(template.render(s, with_media=not text_only_support) for s in support)
    media = () if text_only_support else tuple(m for s in support for m in s.media)
    return Prompt(context + template.query(query), media + query.media)


def support_size(shots: int) -> tuple[int, bool]:
    """How many support examples a prompt of ``shots`` shots holds, and whether they are shown text-only.

    ``shots == 0`` gives the paper's two text-only examples.
    """
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    return (ZERO_SHOT_TEXT_EXAMPLES, True) if shots == 0 else (shots, False)


def support_order(pool_size: int, rng: random.Random) -> Iterator[int]:
    """A uniformly random order of ``range(pool_size)``, drawn lazily: the first k cost about k draws.

    Callers take the first k usable examples in this order. That choice depends only on the order and on
    which examples are usable, never on which unusable ones a caller already knew of, so a query's support
    is the same whichever process evaluates it, in whatever order (drawing *from the known-good ones* would
    shift with every broken example found earlier). Draws are uniform with rejection of repeats until half
    the pool is seen, then the rest is shuffled.
    """
    seen: set[int] = set()
    while len(seen) < pool_size / 2:
        i = rng.randrange(pool_size)
        if i not in seen:
            seen.add(i)
            yield i
    rest = [i for i in range(pool_size) if i not in seen]
    rng.shuffle(rest)
    yield from rest


def sample_support(
    pool_size: int, shots: int, rng: random.Random, exclude: Collection[int] = ()
) -> tuple[list[int], bool]:
    """Random support indices for ``shots`` shots (the first usable ones in :func:`support_order`), and
    whether they are to be shown text-only."""
    k, text_only = support_size(shots)
    usable = pool_size - len({i for i in exclude if 0 <= i < pool_size})
    if usable < k:
        raise ValueError(f"{k} support examples needed but the support split has only {usable} usable")
    return list(islice((i for i in support_order(pool_size, rng) if i not in exclude), k)), text_only
