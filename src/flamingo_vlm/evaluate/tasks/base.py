"""What every task shares: one example, one loaded split, and the task description itself.

A task is data, not a class hierarchy: a reader that turns the benchmark's published files into
:class:`Example` records, a prompt template, how answers are produced (generated or ranked), and a
scorer.  The runner treats all tasks alike.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flamingo_vlm import io
from flamingo_vlm.video import split_time_fragment

logger = logging.getLogger(__name__)

OPEN_ENDED_TEMPLATE_VQA = "<image>Question: {question} Answer: {answer}<|endofchunk|>"
CAPTION_TEMPLATE = "<image>Output: {answer}<|endofchunk|>"


@dataclass(frozen=True)
class Example:
    """One benchmark record, reduced to what prompting and scoring need.

    ``fields`` fill the template (e.g. ``question``); ``answer`` fills ``{answer}`` when the example
    is shown as a support example; ``references`` are what the metric compares against (human
    answers, reference captions); ``label`` is the class index of close-ended tasks (with per-query
    ``candidates``, the index among them; ``relevance`` grades every candidate). Episodic tasks
    (the task is defined inside each prompt) give every query its own ``support`` examples and
    ``candidates``.
    """

    id: str
    media: tuple[str, ...]
    fields: dict[str, str] = field(default_factory=dict)
    answer: str = ""
    references: tuple[str, ...] = ()
    label: int | None = None
    support: tuple[Example, ...] = ()
    candidates: tuple[str, ...] = ()
    relevance: tuple[float, ...] = ()  # graded relevance per candidate (VisDial's dense annotations), if any


@dataclass
class Split:
    """The usable examples of one split, and a count of the records that were not usable (by reason)."""

    examples: list[Example]
    bad: Counter = field(default_factory=Counter)
    candidates: list[str] | None = None  # close-ended tasks: the answers ranked; ``label`` indexes them

    @property
    def num_records(self) -> int:
        return len(self.examples) + sum(self.bad.values())


@dataclass(frozen=True)
class Prediction:
    """A model output for one query: generated text, or one log-likelihood per candidate."""

    text: str
    candidate_logprobs: tuple[float, ...] | None = None


Reader = Callable[[Path, str], Split]
Scorer = Callable[[Sequence[Example], Sequence[Prediction], Sequence[str]], dict[str, float]]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the runner needs to evaluate one benchmark.

    ``mode="generate"`` answers by beam search; ``mode="rank"`` scores every candidate of the eval
    split (class names, yes/no) by log-likelihood.  ``scorer(examples, predictions, candidates)``
    returns the metrics (in percent, as the paper reports them), the first being the headline.
    """

    name: str
    reader: Reader
    template: str
    mode: Literal["generate", "rank"]
    scorer: Scorer
    eval_split: str
    support_split: str
    media: Literal["image", "video"] = "image"
    max_new_tokens: int = 10
    episodic: bool = False  # support examples come with each query; zero-shot is the query alone
    vqa_scoring: bool = False  # the scorer takes ``normalization=`` (EvalConfig.vqa_normalization)
    zero_shot_only: bool = False  # a zero-shot benchmark (RareAct): the query alone, never support examples

    def check_shots(self, shots: Sequence[int]) -> None:
        """A ``ValueError`` for shot counts the benchmark does not define (any but 0 for a zero-shot one)."""
        if self.zero_shot_only and any(s != 0 for s in shots):
            raise ValueError(f"{self.name} is a zero-shot benchmark: evaluate it with shots 0 only, got {list(shots)}")


class RecordChecker:
    """Turns raw records into examples, counting (never raising on) malformed records and missing files."""

    def __init__(self, split_name: str) -> None:
        self.split_name = split_name
        self.examples: list[Example] = []
        self.bad: Counter = Counter()

    def add(self, make: Callable[[], Example]) -> None:
        """Build an example with ``make``; a KeyError/TypeError/ValueError marks the record malformed."""
        try:
            example = make()
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            self.bad["malformed_record"] += 1
            logger.debug("%s: malformed record (%r)", self.split_name, err)
            return
        own_support = [m for support in example.support for m in support.media]
        media = (*example.media, *own_support)  # a video clip's path may carry its segment: ``v.mp4#t=3,9``
        missing = [m for m in media if not Path(split_time_fragment(m)[0]).is_file()]
        if missing:
            self.bad["missing_media"] += 1
            logger.debug("%s: missing media %s", self.split_name, missing[0])
            return
        self.examples.append(example)

    def split(self, candidates: list[str] | None = None) -> Split:
        if self.bad:
            total = len(self.examples) + sum(self.bad.values())
            logger.warning("%s: skipped %s of %d records", self.split_name, dict(self.bad), total)
        return Split(self.examples, self.bad, candidates)


def read_json(path: Path) -> Any:
    """Load a benchmark file, naming the file in the error a user will see (size and nesting limits: io.py)."""
    if not path.is_file():
        raise ValueError(f"expected the benchmark file {path}, which does not exist")
    return io.read_json(path, io.MAX_ANNOTATION_BYTES)


def record_list(data: Any, key: str | None, path: Path, layout: str) -> list:
    """The list of records of a loaded benchmark file (``data[key]``, or ``data`` itself when ``key`` is None).

    Anything else (a null, a number, an object) makes the whole file unusable: a ``ValueError`` naming the
    file and the expected ``layout``, rather than a ``TypeError`` from the loop that reads it.
    """
    records = data.get(key) if key is not None and isinstance(data, dict) else (data if key is None else None)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected {layout}")
    return records
