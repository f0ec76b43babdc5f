"""iVQA (Yang et al., "Just Ask", ICCV 2021): open-ended questions on instructional clips, 5 answers each.

The release (antoyang/just-ask, ``download_downstream.sh``) holds ``train.csv``, ``val.csv`` and ``test.csv``
with columns ``video_id``, ``question`` and ``answer1`` … ``answer5``, and the clips in a ``video/``
folder.  Each question is about a segment of a HowTo100M video; where the CSV gives ``start`` / ``end``
columns (seconds) the segment is cut from the video (``#t=start,end``), otherwise the file is read whole
(the released clips are already cut).  Metric: iVQA accuracy, ``min(#matching answers / 2, 1)``
(:mod:`flamingo_vlm.evaluate.metrics.ivqa`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flamingo_vlm.evaluate.metrics.ivqa import ivqa_accuracy
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split
from flamingo_vlm.evaluate.tasks.csv_records import read_csv_records
from flamingo_vlm.video import with_time_fragment

ANSWER_COLUMNS = tuple(f"answer{i}" for i in range(1, 6))
REQUIRED_COLUMNS = ("video_id", "question", *ANSWER_COLUMNS)


def _bound(row: dict[str, str | None], column: str) -> float | None:
    text = (row.get(column) or "").strip()
    return float(text) if text else None


def _example(row: dict[str, str | None], index: int, root: Path, videos: str) -> Example:
    video_id, question = (row["video_id"] or "").strip(), (row["question"] or "").strip()
    if not video_id or not question:
        raise ValueError("empty video_id or question")
    answers = tuple((row[c] or "").strip() for c in ANSWER_COLUMNS)
    if not all(answers):
        raise ValueError("an empty answer among answer1..answer5")
    start, end = _bound(row, "start"), _bound(row, "end")
    if start is not None and end is not None and not 0 <= start < end:
        raise ValueError(f"start/end {start}..{end} is not 0 <= start < end")
    video = with_time_fragment(str(root / videos.format(video_id=video_id)), start, end)
    # The most common answer is the one a support example shows (ties: the first annotator's).
    answer = max(answers, key=answers.count)
    return Example(
        id=f"{video_id}:{index}", media=(video,), fields={"question": question}, answer=answer, references=answers
    )


def read_ivqa(root: Path, split: str, videos: str = "video/{video_id}.mp4") -> Split:
    """``{split}.csv`` (``train``, ``val``, ``test``); ``videos`` is formatted with ``video_id``."""
    rows = read_csv_records(root / f"{split}.csv", REQUIRED_COLUMNS)
    checker = RecordChecker(f"{root.name}/{split}")
    for index, row in enumerate(rows):
        checker.add(lambda r=row, i=index: _example(r, i, root, videos))
    return checker.split()


def score_ivqa(examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]) -> dict[str, float]:
    """Mean iVQA accuracy in percent."""
    scores = [ivqa_accuracy(p.text, e.references) for e, p in zip(examples, predictions, strict=True)]
    return {"ivqa_accuracy": 100.0 * sum(scores) / len(scores)}
