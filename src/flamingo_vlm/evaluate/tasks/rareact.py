"""RareAct: zero-shot retrieval of unusual actions (verb, noun) in video clips, scored by mWAP.

Layout as published (https://github.com/antoine77340/RareAct; videos from the ``rareact.zip`` it links,
named by YouTube id)::

    rareact.csv        id,video_id,start,end,class_id,verb,noun,annotation
                       14,7frRY7aGwMU,3,5,8,cut,laptop,1
    videos/{video_id}.mp4   (or {video_id}.mp4 at the root: the zip's inner layout is not documented)

``annotation``: 1 positive, 2 hard negative (only the verb is right), 3 hard negative (only the noun),
4 hard negative (both present but the verb not applied to the noun), 0 negative. Each row is one query:
its clip (``start``–``end`` seconds at 1 FPS) and the log-likelihood of ``"{verb} {noun}"`` after
``<image>Output:`` — of its own action, and for a positive clip of every action, since a positive clip is
a (hard) negative of every other class in the official metric (``compute_score.py``). The benchmark is
zero-shot: the prompt is the query alone (no text-only examples either), and shots > 0 are an error.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from flamingo_vlm.evaluate.metrics.ranking import POSITIVE, RAREACT_LABELS, RareActRow, rareact_mwap
from flamingo_vlm.evaluate.tasks.base import Example, Prediction, RecordChecker, Split
from flamingo_vlm.io import MAX_ANNOTATION_BYTES, read_bytes
from flamingo_vlm.video import with_time_fragment

RAREACT_FILE = "rareact.csv"
RAREACT_COLUMNS = ("id", "video_id", "start", "end", "class_id", "verb", "noun", "annotation")
RAREACT_VIDEOS = ("videos/{video_id}.mp4", "{video_id}.mp4")


def action_text(verb: str, noun: str) -> str:
    """What the model scores for a class: ``"cut laptop"``."""
    return f"{verb} {noun}"


def _video(root: Path, video_id: str) -> str:
    paths = [root / p.format(video_id=video_id) for p in RAREACT_VIDEOS]
    return str(next((p for p in paths if p.is_file()), paths[0]))


def _rows(root: Path) -> list[dict[str, str]]:
    path = root / RAREACT_FILE
    if not path.is_file():
        raise ValueError(f"expected the RareAct annotation file {path}, which does not exist")
    try:
        text = read_bytes(path, MAX_ANNOTATION_BYTES).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from err
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in RAREACT_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {','.join(RAREACT_COLUMNS)}")
    return list(reader)


def _row_example(row: dict[str, str], root: Path, all_actions: tuple[str, ...]) -> Example:
    verb, noun, video_id = row["verb"].strip(), row["noun"].strip(), row["video_id"].strip()
    if not verb or not noun or not video_id:
        raise ValueError("verb, noun and video_id must be non-empty")
    label = int(row["annotation"])
    if label not in RAREACT_LABELS:
        raise ValueError(f"annotation {label} is not one of {RAREACT_LABELS}")
    start, end = float(row["start"]), float(row["end"])
    if not 0 <= start < end:
        raise ValueError(f"start/end: need 0 <= start < end seconds, got {start}, {end}")
    own = action_text(verb, noun)
    candidates = all_actions if label == POSITIVE else (own,)
    return Example(
        id=str(int(row["id"])),
        media=(with_time_fragment(_video(root, video_id), start, end),),
        fields={"verb": verb, "noun": noun, "video_id": video_id, "annotation": str(label)},
        answer=own,
        references=(own,),
        label=candidates.index(own),
        candidates=candidates,
    )


def read_rareact(root: Path, split: str) -> Split:
    """Every row of ``rareact.csv`` (the benchmark has one split; ``split`` only names it in logs)."""
    rows = _rows(root)
    actions = sorted({action_text(r["verb"].strip(), r["noun"].strip()) for r in rows if r["verb"] and r["noun"]})
    checker = RecordChecker(f"{root.name}/{split}")
    for row in rows:
        checker.add(lambda r=row: _row_example(r, root, tuple(actions)))
    return checker.split()


def score_rareact(examples: Sequence[Example], predictions: Sequence[Prediction], _: Sequence[str]) -> dict[str, float]:
    """mWAP (percent) as RareAct's ``compute_score.py`` computes it, over the classes with a positive clip."""
    rows = [
        RareActRow(e.fields["video_id"], (e.fields["verb"], e.fields["noun"]), int(e.fields["annotation"]))
        for e in examples
    ]
    action_of = {action_text(*r.action): r.action for r in rows}
    scores = []
    for e, p in zip(examples, predictions, strict=True):
        if p.candidate_logprobs is None:
            raise ValueError("RareAct predictions need their candidate log-likelihoods")
        pairs = zip(e.candidates, p.candidate_logprobs, strict=True)
        scores.append({action_of[text]: lp for text, lp in pairs if text in action_of})
    return {"mwap": 100.0 * rareact_mwap(rows, scores)["mwap"]}
