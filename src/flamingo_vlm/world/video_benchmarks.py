"""ShapesWorld's video captioning and open-ended video QA sets, in VATEX, YouCook2, iVQA and NExT-QA layouts.

Each writer fills ``{root}/{task}/`` with the files the real benchmark publishes (see
:mod:`flamingo_vlm.evaluate.tasks` and docs/evaluate.md), so ``flamingo eval --task {task}`` reads them with
the reader of the downloaded benchmark.  The clips are :mod:`.motion`'s moving shapes at 1 frame per second.
Where the real benchmark annotates a *segment* of a longer video (YouCook2's recipe steps, VATEX's 10-second
windows of a YouTube video, iVQA's clips), the world writes a longer video of several clips one after the
other and annotates the segment, so the reader's cut (``#t=start,end``) is what shows the right clip.

The sets are small (at most :data:`MAX_EVAL` eval and :data:`MAX_SUPPORT` support records): the demo scores
a dozen queries of each, and every clip costs world-generation time.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from flamingo_vlm.video import write_video
from flamingo_vlm.world.motion import Clip, clip_caption, clip_question, random_clip, render_clip
from flamingo_vlm.world.scene import RenderConfig
from flamingo_vlm.world.seeding import stream

MAX_EVAL, MAX_SUPPORT = 30, 60
VATEX_CAPTIONS = 10
IVQA_ANSWERS = 5
_NUMBER_WORDS = ("zero", "one", "two", "three")


def _capped(sizes: dict[str, int]) -> dict[str, int]:
    """The first split (eval) at most MAX_EVAL records, the second (support) at most MAX_SUPPORT."""
    caps = (MAX_EVAL, MAX_SUPPORT)
    return {split: min(n, caps[min(i, 1)]) for i, (split, n) in enumerate(sizes.items())}


def _short_clip(rng: random.Random, config: RenderConfig) -> Clip:
    return random_clip(rng, config, min_frames=3, max_frames=5)


def _write_joined(path: Path, clips: list[Clip], config: RenderConfig) -> list[tuple[int, int]]:
    """One 1-FPS video of the clips in a row; each clip's ``(start, end)`` second (end excluded)."""
    frames, bounds = [], []
    for clip in clips:
        bounds.append((len(frames), len(frames) + clip.num_frames))
        frames += render_clip(clip, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(frames, path, fps=1.0)
    return bounds


def write_vatex(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``vatex_{training,public_test}`` JSON lists of ``{videoID, enCap}``: even records ship the cut clip
    ``videos/{videoID}.mp4``, odd ones the whole "YouTube" video ``videos/{id}.mp4`` (a lead-in clip first)."""
    files = {"train": "vatex_training_v1.0.json", "public_test": "vatex_public_test_english_v1.1.json"}
    for split, num in _capped(sizes).items():
        rng = stream(seed, "eval", "vatex", split)
        records = []
        for i in range(num):
            youtube_id = f"sw{split[0]}_{i:05d}"  # an underscore, as real YouTube ids may hold
            clip = _short_clip(rng, config)
            if i % 2 == 0:
                video_id = f"{youtube_id}_000000_{clip.num_frames:06d}"
                _write_joined(root / "videos" / f"{video_id}.mp4", [clip], config)
            else:
                lead_in = _short_clip(rng, config)
                (_, (start, end)) = _write_joined(root / "videos" / f"{youtube_id}.mp4", [lead_in, clip], config)
                video_id = f"{youtube_id}_{start:06d}_{end:06d}"
            captions = [clip_caption(clip, rng) for _ in range(VATEX_CAPTIONS)]
            records.append({"videoID": video_id, "enCap": captions, "chCap": []})
        _write_json(root / files[split], records)


def write_youcook2(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``youcookii_annotations_trainval.json`` and ``raw_videos/{subset}/{recipe}/{id}.mp4``: each "recipe"
    video is 2–3 clips in a row, each an annotated step captioned by what moves where."""
    subsets = {"train": "training", "val": "validation"}
    database = {}
    for split, num in _capped(sizes).items():
        rng = stream(seed, "eval", "youcook2", split)
        segments, video = 0, 0
        while segments < num:
            clips = [_short_clip(rng, config) for _ in range(min(rng.randint(2, 3), num - segments))]
            youtube_id, recipe_type = f"yc{split[0]}{video:05d}", str(101 + video % 3)
            path = root / "raw_videos" / subsets[split] / recipe_type / f"{youtube_id}.mp4"
            bounds = _write_joined(path, clips, config)
            annotations = [
                {"segment": [start, end], "id": k, "sentence": clip_caption(clip, rng).rstrip(".")}
                for k, (clip, (start, end)) in enumerate(zip(clips, bounds))
            ]
            database[youtube_id] = {
                "duration": float(bounds[-1][1]),
                "subset": subsets[split],
                "recipe_type": recipe_type,
                "annotations": annotations,
                "video_url": f"https://www.youtube.com/watch?v={youtube_id}",
            }
            segments, video = segments + len(clips), video + 1
    _write_json(root / "youcookii_annotations_trainval.json", {"database": database})


def write_ivqa(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``{split}.csv`` (``video_id, start, end, question, answer1..answer5``) and ``video/{video_id}.mp4``: the
    question's clip follows a lead-in clip, and ``start``/``end`` bound it."""
    for split, num in _capped(sizes).items():
        rng = stream(seed, "eval", "ivqa", split)
        rows = []
        for i in range(num):
            video_id = f"iv{split[:2]}{i:05d}"
            clip = _short_clip(rng, config)
            (_, (start, end)) = _write_joined(
                root / "video" / f"{video_id}.mp4", [_short_clip(rng, config), clip], config
            )
            question, answer = clip_question(clip, rng)
            rows.append([video_id, start, end, question, *[answer] * IVQA_ANSWERS])
        header = ["video_id", "start", "end", "question", *(f"answer{k}" for k in range(1, IVQA_ANSWERS + 1))]
        _write_csv(root / f"{split}.csv", header, rows)


def write_nextqa(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """NExT-OE ``{split}.csv``, ``map_vid_vidorID.json`` and ``NExTVideo/{folder}/{id}.mp4``: direction questions
    (type ``TC``, scored by WUPS) and shape counts (type ``DC``, exact match)."""
    paths = {}
    for split, num in _capped(sizes).items():
        rng = stream(seed, "eval", "nextqa", split)
        rows = []
        for i in range(num):
            video = str(rng.randrange(10**9, 10**10))  # NExT-QA's ids are 10-digit numbers (Flickr's)
            while video in paths:
                video = str(rng.randrange(10**9, 10**10))
            paths[video] = f"{len(paths) // 1000:04d}/{video}"
            clip = _short_clip(rng, config)
            _write_joined(root / "NExTVideo" / f"{paths[video]}.mp4", [clip], config)
            if rng.random() < 0.25:
                question, answer, kind = "how many shapes are there", _NUMBER_WORDS[len(clip.scene.shapes)], "DC"
            else:
                (question, answer), kind = clip_question(clip, rng), "TC"
            size = config.image_size
            rows.append([video, clip.num_frames, size, size, question.rstrip("?").lower(), answer, i, kind])
        header = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type"]
        _write_csv(root / f"{split}.csv", header, rows)
    _write_json(root / "map_vid_vidorID.json", paths)


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# task directory -> (writer, (eval split, support split)), merged into world.benchmarks.BENCHMARKS
VIDEO_BENCHMARKS = {
    "vatex": (write_vatex, ("public_test", "train")),
    "youcook2": (write_youcook2, ("val", "train")),
    "ivqa": (write_ivqa, ("test", "train")),
    "nextqa": (write_nextqa, ("test", "train")),
}
