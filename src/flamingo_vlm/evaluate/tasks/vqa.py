"""Open-ended VQA benchmarks, read from their published files.

Three on-disk formats exist for the four benchmarks of the paper:

* the VQA format (VQAv2, OK-VQA): a questions file ``{"questions": [{question_id, image_id,
  question}]}`` and an annotations file ``{"annotations": [{question_id, answers: [{answer}]}]}``,
  COCO images named ``COCO_{split}_{image_id:012d}.jpg``;
* TextVQA: one file ``{"data": [{question_id, image_id, question, answers: [str]}]}``;
* VizWiz: one file, a list of ``{image, question, answers: [{answer}]}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from flamingo_vlm.evaluate.metrics.vqa import VqaNormalization, vqa_accuracy
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split, read_json, record_list


def _majority(answers: Sequence[str]) -> str:
    """The most frequent human answer: what a support example shows as its answer."""
    return Counter(answers).most_common(1)[0][0]


def _vqa_example(qid: object, image: Path, question: object, answers: Sequence[str]) -> Example:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("empty question")
    if not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError("no human answers")
    return Example(
        id=str(qid),
        media=(str(image),),
        fields={"question": question.strip()},
        answer=_majority(answers),
        references=tuple(answers),
    )


def read_vqa_format(
    root: Path,
    split: str,
    *,
    questions: str,
    annotations: str,
    images: str,
) -> Split:
    """VQAv2 / OK-VQA: join questions and annotations on ``question_id``.

    ``questions``, ``annotations`` and ``images`` are patterns formatted with ``split`` (and, for
    images, ``image_id``), relative to ``root``.
    """
    questions_path, annotations_path = root / questions.format(split=split), root / annotations.format(split=split)
    qs = record_list(read_json(questions_path), "questions", questions_path, "{'questions': [...]} (VQA format)")
    anns = record_list(
        read_json(annotations_path), "annotations", annotations_path, "{'annotations': [...]} (VQA format)"
    )
    answers_by_qid = {}
    for ann in anns:  # an annotation without a usable id answers no question: its question is malformed
        if isinstance(ann, dict) and isinstance(ann.get("question_id"), (int, str)):
            answers_by_qid[ann["question_id"]] = ann.get("answers")
    checker = RecordChecker(f"{root.name}/{split}")
    for q in qs:
        checker.add(
            lambda q=q: _vqa_example(
                q["question_id"],
                root / images.format(split=split, image_id=int(q["image_id"])),
                q["question"],
                [a["answer"] for a in answers_by_qid[q["question_id"]]],
            )
        )
    return checker.split()


def read_textvqa(root: Path, split: str, *, annotations: str, images: str) -> Split:
    """TextVQA: ``{"data": [...]}`` with the 10 answers as plain strings."""
    path = root / annotations.format(split=split)
    records = record_list(read_json(path), "data", path, "a TextVQA file {'data': [...]}")
    checker = RecordChecker(f"{root.name}/{split}")
    for r in records:
        checker.add(
            lambda r=r: _vqa_example(
                r["question_id"], root / images.format(split=split, image_id=r["image_id"]), r["question"], r["answers"]
            )
        )
    return checker.split()


def read_vizwiz(root: Path, split: str, *, annotations: str, images: str) -> Split:
    """VizWiz: a list of records naming their image file; the question id is the image name."""
    path = root / annotations.format(split=split)
    records = record_list(read_json(path), None, path, "a VizWiz annotations list")
    checker = RecordChecker(f"{root.name}/{split}")
    for r in records:
        checker.add(
            lambda r=r: _vqa_example(
                Path(r["image"]).stem,
                root / images.format(split=split, image=r["image"]),
                r["question"],
                [a["answer"] for a in r["answers"]],
            )
        )
    return checker.split()


def score_vqa(
    examples: Sequence[Example],
    predictions: Sequence[Prediction],
    _: Sequence[str],
    *,
    normalization: VqaNormalization = "official",
) -> dict[str, float]:
    """VQA accuracy in percent: the official script's by default, ``"normalize_both"`` for raw-answer sets."""
    accs = [
        vqa_accuracy(p.text, e.references, normalization=normalization)
        for e, p in zip(examples, predictions, strict=True)
    ]
    return {"vqa_accuracy": 100.0 * sum(accs) / len(accs)}
