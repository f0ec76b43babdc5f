"""Video QA in the MSVD-QA / MSRVTT-QA format: ``{split}_qa.json``, a list of
``{"id", "video_id", "question", "answer"}``, with one video file per ``video_id``.

MSVD-QA ships ``youtube_mapping.txt`` (``<youtube clip name> vid<N>``) because its videos keep their
YouTube names; when present it is used to find ``video_id`` N's file.  Answers are single words
or short phrases; the metric is top-1 accuracy of the generated answer after VQA normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flamingo_vlm.evaluate.metrics.vqa import normalize_vqa_answer
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split, read_json, record_list


def _youtube_names(root: Path) -> dict[str, str]:
    """``vid<N>`` -> clip name, from MSVD-QA's mapping file (empty when there is none)."""
    path = root / "youtube_mapping.txt"
    if not path.is_file():
        return {}
    pairs = (line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {vid: name for name, vid in pairs}


def read_video_qa(root: Path, split: str, *, videos: str) -> Split:
    """``videos`` is formatted with ``video_id`` and ``name`` (the YouTube clip name, or ``vid<N>``)."""
    path = root / f"{split}_qa.json"
    records = record_list(read_json(path), None, path, "a list of question records")
    names = _youtube_names(root)
    checker = RecordChecker(f"{root.name}/{split}")

    def make(r: dict) -> Example:
        answer = str(r["answer"]).strip()
        if not answer or not str(r["question"]).strip():
            raise ValueError("empty question or answer")
        vid = r["video_id"]
        video = root / videos.format(video_id=vid, name=names.get(f"vid{vid}", f"vid{vid}"))
        return Example(
            id=str(r.get("id", f"{vid}:{r['question']}")),
            media=(str(video),),
            fields={"question": str(r["question"]).strip()},
            answer=answer,
            references=(answer,),
        )

    for record in records:
        checker.add(lambda r=record: make(r))
    return checker.split()


def score_video_qa(
    examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]
) -> dict[str, float]:
    """Top-1 accuracy (percent): the normalised answer must equal the normalised reference."""
    hits = [
        normalize_vqa_answer(p.text) == normalize_vqa_answer(e.references[0])
        for e, p in zip(examples, predictions, strict=True)
    ]
    return {"top1": 100.0 * sum(hits) / len(hits)}
