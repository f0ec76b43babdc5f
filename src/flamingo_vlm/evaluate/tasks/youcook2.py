"""YouCook2 clip captioning (Zhou et al., AAAI 2018): one caption per annotated recipe step.

``youcookii_annotations_trainval.json`` is ``{"database": {<youtube id>: {"duration", "subset"
("training"/"validation"), "recipe_type", "video_url", "annotations": [{"id", "segment": [start, end],
"sentence"}]}}}``; the raw videos sit at ``raw_videos/{subset}/{recipe_type}/{youtube id}.{mp4,mkv,webm}``
as the official download script stores them.  Every annotated segment is one example: the clip cut from
its video (``#t=start,end``) captioned by its one sentence.  Metric: CIDEr over the segments (one
reference each), ``pycocoevalcap`` with the PTB tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from flamingo_vlm.evaluate.tasks.base import Example, RecordChecker, Split, read_json
from flamingo_vlm.video import with_time_fragment

ANNOTATIONS = "youcookii_annotations_trainval.json"
SUBSETS = {"train": "training", "val": "validation"}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")


def _video(root: Path, subset: str, entry: dict, youtube_id: str) -> Path:
    """The downloaded file, whatever container YouTube gave it (the ``.mp4`` name when none exists)."""
    stem = root / "raw_videos" / subset / str(entry["recipe_type"]) / youtube_id
    found = [stem.with_name(youtube_id + ext) for ext in VIDEO_EXTENSIONS]
    return next((path for path in found if path.is_file()), found[0])


def _segment(annotation: dict, video: Path, youtube_id: str) -> Example:
    start, end = (float(t) for t in annotation["segment"])
    sentence = str(annotation["sentence"]).strip()
    if not sentence:
        raise ValueError("empty sentence")
    if not 0 <= start < end:
        raise ValueError(f"segment {start}..{end} is not 0 <= start < end")
    return Example(
        id=f"{youtube_id}_{annotation['id']}",
        media=(with_time_fragment(str(video), start, end),),
        answer=sentence,
        references=(sentence,),
    )


def read_youcook2(root: Path, split: str) -> Split:
    """The segments of the ``train`` (``training``) or ``val`` (``validation``) videos."""
    if split not in SUBSETS:
        raise ValueError(f"YouCook2 has no annotated split {split!r}; choose from {sorted(SUBSETS)}")
    data = read_json(root / ANNOTATIONS)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise ValueError(f"{root / ANNOTATIONS}: expected {{'database': {{video id: {{...}}}}}}")
    checker = RecordChecker(f"{root.name}/{split}")
    for youtube_id, entry in database.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), list) or "subset" not in entry:
            checker.bad["malformed_record"] += 1
            continue
        if entry["subset"] != SUBSETS[split]:
            continue
        try:
            video = _video(root, entry["subset"], entry, youtube_id)
        except (KeyError, TypeError):
            checker.bad["malformed_record"] += len(entry["annotations"])
            continue
        for annotation in entry["annotations"]:
            checker.add(lambda a=annotation, v=video, y=youtube_id: _segment(a, v, y))
    return checker.split()
