"""Tiny STAR, VisDial and RareAct files in their published layouts, for the readers and the runner.

Texts are short, so that a few-shot prompt fits the tiny test LM's 128 positions.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = ["red", "green", "blue", "yellow"]
RGB = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 40)}


def _video(path: Path, colours: list[str]) -> None:
    from flamingo_vlm.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video([np.full((16, 16, 3), RGB[c], dtype=np.uint8) for c in colours], path, fps=1.0)


def star_record(i: int, **override) -> dict:
    """A STAR record whose answer is the colour of the clip's frames (clip: seconds 1 to 3)."""
    colour = COLOURS[i % 4]
    types = ("Interaction", "Sequence", "Prediction", "Feasibility")
    record = {
        "question_id": f"{types[i % 4]}_T1_{i}",
        "question": "which colour?",
        "video_id": f"V{i:04d}",
        "start": 1.0,
        "end": 3.0,
        "answer": colour,
        "choices": [{"choice_id": k, "choice": c, "choice_program": []} for k, c in enumerate(COLOURS)],
        "question_program": [],
        "situations": {},
    }
    return {**record, **override}


def write_star(root: Path, counts: dict[str, int], extra: dict[str, list[dict]] | None = None) -> None:
    """``STAR_{split}.json`` and ``Charades_v1_480/{video_id}.mp4`` (4 s: grey, colour, colour, grey)."""
    offset = 0
    for split, n in counts.items():
        records = [star_record(offset + i) for i in range(n)] + list((extra or {}).get(split, []))
        for r in records:
            colour = r["answer"] if r.get("answer") in RGB else "red"
            if isinstance(r.get("video_id"), str):
                _video(root / "Charades_v1_480" / f"{r['video_id']}.mp4", ["blue", colour, colour, "blue"])
        (root / f"STAR_{split}.json").write_text(json.dumps(records))
        offset += n


VISDIAL_IMAGES = {
    "val": "VisualDialog_val2018/VisualDialog_val2018_{:012d}.jpg",
    "train": "train2014/COCO_train2014_{:012d}.jpg",
}


def write_visdial(root: Path, counts: dict[str, int], options: int = 5, rounds: int = 2) -> None:
    """``visdial_1.0_{split}.json`` with ``counts[split]`` answered rounds (dialogs of ``rounds`` rounds),
    ``options`` answer options each; the val split gets dense annotations for each dialog's last round."""
    for split, n in counts.items():
        answers = ["red", "green", "blue", "yellow", "yes", "no", "two"]
        questions = ["what colour", "is it square"]
        dialogs, dense = [], []
        for d in range((n + rounds - 1) // rounds):
            image_id = 100 * (split == "val") + d
            colour = COLOURS[d % 4]
            path = root / VISDIAL_IMAGES.get(split, VISDIAL_IMAGES["val"]).format(image_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), RGB[colour]).save(path)
            turns = []
            for r in range(min(rounds, n - d * rounds)):
                gt = answers.index(colour) if r == 0 else answers.index("yes")
                opts = [gt] + [a for a in range(len(answers)) if a != gt][: options - 1]
                opts = opts[d % options :] + opts[: d % options]  # the answer is not always first
                turns.append({"question": r % 2, "answer": gt, "answer_options": opts, "gt_index": opts.index(gt)})
            dialogs.append({"image_id": image_id, "caption": f"a {colour} square", "dialog": turns})
            relevance = [
                1.0 if o == turns[-1]["answer"] else 0.5 if answers[o] in COLOURS else 0.0
                for o in turns[-1]["answer_options"]
            ]
            dense.append({"image_id": image_id, "round_id": len(turns), "gt_relevance": relevance})
        data = {"questions": questions, "answers": answers, "dialogs": dialogs}
        (root / f"visdial_1.0_{split}.json").write_text(json.dumps({"version": "1.0", "split": split, "data": data}))
        if split == "val":
            (root / f"visdial_1.0_{split}_dense_annotations.json").write_text(json.dumps(dense))


RAREACT_HEADER = ["id", "video_id", "start", "end", "class_id", "verb", "noun", "annotation"]


def rareact_rows(n: int) -> list[list]:
    """``n`` rows over 2 verbs × 2 nouns, every label kind, 2 clips per video."""
    actions = [("push", "red"), ("push", "blue"), ("lift", "red"), ("lift", "blue")]
    labels = [1, 0, 2, 3, 4, 1]
    rows = []
    for i in range(n):
        verb, noun = actions[i % 4]
        rows.append([i, f"vid{i // 2}", 2 * (i % 2), 2 * (i % 2) + 2, i % 4, verb, noun, labels[i % len(labels)]])
    return rows


def write_rareact(root: Path, n: int, extra_rows: list[list] | None = None) -> None:
    """``rareact.csv`` and ``videos/{video_id}.mp4`` (4 s each, two annotated 2 s clips)."""
    rows = rareact_rows(n) + list(extra_rows or [])
    for video in sorted({str(r[1]) for r in rows}):
        _video(root / "videos" / f"{video}.mp4", ["red", "red", "blue", "blue"])
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "rareact.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RAREACT_HEADER)
        writer.writerows(rows)
