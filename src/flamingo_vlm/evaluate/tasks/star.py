"""STAR (situated reasoning in real-world videos): multiple choice over 4 answers about a clip.

Layout as published (https://github.com/csbobby/STAR, ``STAR_{split}.json``; videos are Charades')::

    STAR_{split}.json     [{"question_id": "Interaction_T1_13", "question": "...", "video_id": "6H78U",
                            "start": 11.1, "end": 19.6, "answer": "The closet/cabinet.",
                            "choices": [{"choice_id": 0, "choice": "The closet/cabinet."}, ...],
                            "question_program": [...], "situations": {...}}, ...]
    Charades_v1_480/{video_id}.mp4

The question type (Interaction, Sequence, Prediction, Feasibility) is the ``question_id``'s prefix.
``STAR_test.json`` has no answers: its records are counted as malformed (the test server scores it).
The clip is the annotated segment (``start``–``end`` seconds), sampled at 1 FPS. The model scores each
choice as the answer and the most likely one is its answer; the metric is accuracy, overall and per type.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flamingo_vlm.evaluate.metrics.ranking import accuracy_by_group
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split, read_json, record_list
from flamingo_vlm.video import with_time_fragment

STAR_VIDEOS = "Charades_v1_480/{video_id}.mp4"
QUESTION_TYPES = ("Interaction", "Sequence", "Prediction", "Feasibility")
NUM_CHOICES = 4


def question_type(question_id: str) -> str:
    """``"Interaction_T1_13"`` → ``"Interaction"``; a ValueError for an id of no STAR type."""
    prefix = str(question_id).split("_", 1)[0]
    if prefix not in QUESTION_TYPES:
        raise ValueError(f"question_id {question_id!r} does not start with a STAR type {QUESTION_TYPES}")
    return prefix


def _star_example(record: dict, root: Path, videos: str) -> Example:
    choices = sorted(record["choices"], key=lambda c: int(c["choice_id"]))
    texts = tuple(str(c["choice"]).strip() for c in choices)
    if len(texts) != NUM_CHOICES or not all(texts):
        raise ValueError(f"choices: expected {NUM_CHOICES} non-empty choices, got {texts}")
    answer = str(record["answer"]).strip()
    if answer not in texts:
        raise ValueError(f"answer {answer!r} is not among the choices")
    start, end = float(record["start"]), float(record["end"])
    if not 0 <= start < end:
        raise ValueError(f"start/end: need 0 <= start < end seconds, got {start}, {end}")
    video = with_time_fragment(str(root / videos.format(video_id=record["video_id"])), start, end)
    return Example(
        id=str(record["question_id"]),
        media=(video,),
        fields={"question": str(record["question"]).strip(), "type": question_type(record["question_id"])},
        answer=answer,
        references=(answer,),
        label=texts.index(answer),
        candidates=texts,
    )


def read_star(root: Path, split: str, *, videos: str = STAR_VIDEOS) -> Split:
    """Read ``STAR_{split}.json``; records without a valid answer, choices, type or segment are counted skips."""
    path = root / f"STAR_{split}.json"
    records = record_list(read_json(path), None, path, "a list of STAR question records")
    checker = RecordChecker(f"{root.name}/{split}")
    for record in records:
        checker.add(lambda r=record: _star_example(r, root, videos))
    return checker.split()


def predicted_index(prediction: Prediction) -> int:
    """The highest-scoring candidate (the first of equals, as the runner picks its text)."""
    scores = prediction.candidate_logprobs
    if not scores:
        raise ValueError("a ranking task's prediction needs its candidate log-likelihoods")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def score_star(examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]) -> dict[str, float]:
    """Accuracy (percent) over all questions, then per question type as ``accuracy_{type}``."""
    correct = [predicted_index(p) == e.label for e, p in zip(examples, predictions, strict=True)]
    by_type = accuracy_by_group(correct, [e.fields["type"] for e in examples])
    return {("accuracy" + (f"_{t}" if t else "")): 100.0 * v for t, v in by_type.items()}
