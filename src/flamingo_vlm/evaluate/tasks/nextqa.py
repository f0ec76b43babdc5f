"""NExT-QA open-ended (NExT-OE; Xiao et al., CVPR 2021), scored with WUPS as its official ``eval_oe.py``.

The release (doc-doc/NExT-OE ``dataset/nextqa``) holds ``train.csv``, ``val.csv`` and ``test.csv`` with
columns ``video,frame_count,width,height,question,answer,qid,type``, an optional second reference per
question in ``add_reference_answer_{split}.json`` (``{video: {qid: answer}}``), and
``map_vid_vidorID.json`` mapping ``video`` to its VidOR path, the video being ``NExTVideo/{path}.mp4``
(without the map: ``NExTVideo/{video}.mp4``).  Questions are about the whole video.

Scoring follows ``eval_oe.py``: answers are reduced to content-word lemmas, counting (``DC``) and binary
(``DB``) questions need an exact match, every other type scores WUPS@0.0 and WUPS@0.9
(:mod:`flamingo_vlm.evaluate.metrics.wups`), the best over the question's references.  The official
lemmatiser (pywsd, with a POS tagger) and its NExT-QA stop-word list need data downloads; here a token is
lemmatised by WordNet's ``morphy`` and a short list of function words is dropped (docs/evaluate.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flamingo_vlm.evaluate.metrics.wups import load_wordnet, wups
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split, read_json
from flamingo_vlm.evaluate.tasks.csv_records import read_csv_records

REQUIRED_COLUMNS = ("video", "question", "answer", "qid", "type")
EXACT_MATCH_TYPES = frozenset({"DC", "DB"})  # descriptive counting and binary questions
STOP_WORDS = frozenset(
    "a an the is are was were be been being am do does did to of and or it its his her their them they he she s".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def content_words(answer: str, wordnet: Any) -> list[str]:
    """Lower-cased words, each lemmatised by WordNet's ``morphy`` (first analysis), function words dropped."""
    words = [wordnet.morphy(w) or w for w in _WORD.findall(answer.lower())]
    return [w for w in words if w not in STOP_WORDS]


def _video_paths(root: Path) -> dict[str, str]:
    path = root / "map_vid_vidorID.json"
    mapping = read_json(path) if path.is_file() else {}
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected {{video id: 'folder/vidor id'}}")
    return {str(k): str(v) for k, v in mapping.items()}


def _extra_references(root: Path, split: str) -> dict[str, dict[str, str]]:
    path = root / f"add_reference_answer_{split}.json"
    extra = read_json(path) if path.is_file() else {}
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise ValueError(f"{path}: expected {{video: {{qid: answer}}}}")
    return extra


def read_nextqa(root: Path, split: str) -> Split:
    """``{split}.csv`` of NExT-OE (``train``, ``val``, ``test``) with its videos and extra references."""
    rows = read_csv_records(root / f"{split}.csv", REQUIRED_COLUMNS)
    paths, extra = _video_paths(root), _extra_references(root, split)
    checker = RecordChecker(f"{root.name}/{split}")

    def make(row: dict[str, str | None]) -> Example:
        video, qid = (row["video"] or "").strip(), (row["qid"] or "").strip()
        question, answer, kind = ((row[c] or "").strip() for c in ("question", "answer", "type"))
        if not (video and qid and question and answer and kind):
            raise ValueError("empty video, qid, question, answer or type")
        references = (answer, *([str(extra[video][qid])] if qid in extra.get(video, {}) else []))
        return Example(
            id=f"{video}_{qid}",
            media=(str(root / "NExTVideo" / f"{paths.get(video, video)}.mp4"),),
            fields={"question": question, "type": kind},
            answer=answer,
            references=references,
        )

    for row in rows:
        checker.add(lambda r=row: make(r))
    return checker.split()


def nextqa_scores(prediction: str, references: Sequence[str], kind: str, wordnet: Any) -> tuple[float, float]:
    """(WUPS@0.0, WUPS@0.9) of one answer: exact match of content words for ``DC``/``DB``, else WUPS."""
    pred = content_words(prediction, wordnet)
    refs = [content_words(r, wordnet) for r in references]
    if kind in EXACT_MATCH_TYPES:
        hit = float(any(pred == r for r in refs))
        return hit, hit
    return (
        max(wups(pred, r, 0.0, wordnet) for r in refs),
        max(wups(pred, r, 0.9, wordnet) for r in refs),
    )


def score_nextqa(examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]) -> dict[str, float]:
    """Mean WUPS@0.0 (the headline) and WUPS@0.9, in percent."""
    wordnet = load_wordnet()
    pairs = [
        nextqa_scores(p.text, e.references, e.fields["type"], wordnet)
        for e, p in zip(examples, predictions, strict=True)
    ]
    return {
        "wups0": 100.0 * sum(s0 for s0, _ in pairs) / len(pairs),
        "wups9": 100.0 * sum(s9 for _, s9 in pairs) / len(pairs),
    }
