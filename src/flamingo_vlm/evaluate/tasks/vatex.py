"""VATEX video captioning (Wang et al., ICCV 2019) from its published JSON files.

``vatex_training_v1.0.json``, ``vatex_validation_v1.0.json`` and ``vatex_public_test_english_v1.1.json``
each hold a list of ``{"videoID": "<youtube id>_<start:06d>_<end:06d>", "enCap": [10 English captions],
"chCap": [...]}``.  The ``videoID`` names a 10-second segment of a YouTube video.  Downloads come two ways,
and both are read: the cut clip as ``videos/{videoID}.mp4``, or the whole YouTube video as
``videos/{youtube id}.mp4``, from which the segment is cut (``#t=start,end``).  Metric: CIDEr against the
10 English captions (``pycocoevalcap``, PTB tokenizer), as for COCO.
"""

from __future__ import annotations

from pathlib import Path

from flamingo_vlm.evaluate.tasks.base import Example, RecordChecker, Split, read_json, record_list
from flamingo_vlm.video import with_time_fragment

VATEX_FILES = {
    "train": "vatex_training_v1.0.json",
    "val": "vatex_validation_v1.0.json",
    "public_test": "vatex_public_test_english_v1.1.json",
}


def parse_video_id(video_id: str) -> tuple[str, int, int]:
    """``"Ptf_2VRj-V0_000122_000132"`` → ``("Ptf_2VRj-V0", 122, 132)`` (YouTube ids may hold underscores)."""
    youtube_id, start, end = video_id.rsplit("_", 2)
    if not youtube_id or not (start.isdigit() and end.isdigit()) or int(end) <= int(start):
        raise ValueError(f"videoID {video_id!r} is not <youtube id>_<start>_<end> with start < end")
    return youtube_id, int(start), int(end)


def _clip(root: Path, video_id: str) -> str:
    """The cut clip when it was downloaded, else the segment of the whole video."""
    clip = root / "videos" / f"{video_id}.mp4"
    if clip.is_file():
        return str(clip)
    youtube_id, start, end = parse_video_id(video_id)
    return with_time_fragment(str(root / "videos" / f"{youtube_id}.mp4"), start, end)


def _example(record: dict, root: Path) -> Example:
    video_id = record["videoID"]
    if not isinstance(video_id, str) or not video_id:
        raise ValueError("videoID must be a non-empty string")
    captions = record["enCap"]
    if not isinstance(captions, list) or not captions:
        raise ValueError("enCap must be a non-empty list of captions")
    captions = [str(c).strip() for c in captions]
    if not all(captions):
        raise ValueError("enCap holds an empty caption")
    return Example(id=video_id, media=(_clip(root, video_id),), answer=captions[0], references=tuple(captions))


def read_vatex(root: Path, split: str) -> Split:
    """One VATEX split: ``train``, ``val`` or ``public_test`` (the English public test set, with captions)."""
    if split not in VATEX_FILES:
        raise ValueError(f"VATEX has no split {split!r}; choose from {sorted(VATEX_FILES)}")
    path = root / VATEX_FILES[split]
    records = record_list(read_json(path), None, path, 'a list of {"videoID", "enCap"} records')
    checker = RecordChecker(f"{root.name}/{split}")
    for record in records:
        checker.add(lambda r=record: _example(r, root))
    return checker.split()
