"""ShapesWorld's ranking benchmarks, each in the published layout its task reads (docs/evaluate.md):

==========  ===========  ======================================================================================
directory   stands in    content
==========  ===========  ======================================================================================
``star``    STAR         a moving shape; Interaction (which shape moves), Sequence (which way it went),
                         Prediction (what it does next), Feasibility (which edge it can reach), 4 choices each
``visdial`` VisDial 1.0  a scene, its caption and 3-round dialogues of the world's VQA questions; 20 answer
                         options per round (not 100: the demo stays fast), dense relevance on one round per dialog
``rareact`` RareAct      clips annotated with (verb = "move {direction}", noun = shape) and RareAct's 0–4 labels,
                         two actions per clip
==========  ===========  ======================================================================================

Every clip is padded by one still frame at each end and annotated with its moving segment
(``start``/``end`` seconds), so the evaluation cuts the segment out as it does on the real benchmarks.
VisDial's dense relevance here is 1 for the ground truth and 0.5 for the other options that answer the same
kind of question (a colour for a colour question): a stand-in for the human relevance judgements.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from flamingo_vlm.video import write_video
from flamingo_vlm.world.language import captions, questions
from flamingo_vlm.world.motion import DIRECTIONS, Clip, random_clip, render_clip
from flamingo_vlm.world.scene import COLOURS, POSITIONS, SHAPES, RenderConfig, encode_image, random_scene, render_scene
from flamingo_vlm.world.seeding import stream

VISDIAL_ROUNDS = 3
VISDIAL_OPTIONS = 20
RAREACT_ACTIONS_PER_CLIP = 2
_EDGES = {"left": "the left edge", "right": "the right edge", "up": "the top edge", "down": "the bottom edge"}
_NEXT = {d: f"keep moving {'to the ' if d in ('left', 'right') else ''}{d}" for d in DIRECTIONS}
_WENT = {d: f"{'to the ' if d in ('left', 'right') else ''}{d}" for d in DIRECTIONS}


def _write_clip(path: Path, clip: Clip, config: RenderConfig) -> tuple[int, int]:
    """The clip with a still frame before and after; returns its moving segment (start, end) in seconds."""
    frames = render_clip(clip, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video([frames[0], *frames, frames[-1]], path, fps=1.0)
    return 1, 1 + len(frames)


def _star_question(clip: Clip, rng: random.Random, kind: str) -> tuple[str, str, list[str]]:
    """(question, answer, 4 choices) of one STAR question type about the clip."""
    mover = clip.mover
    name = f"{mover.colour} {mover.shape}"
    if kind == "Interaction":
        others = {f"the {c} {s}" for c in COLOURS for s in SHAPES} - {f"the {name}"}
        return "Which shape is moving?", f"the {name}", [f"the {name}", *rng.sample(sorted(others), 3)]
    table, question = {
        "Sequence": (_WENT, f"Which way did the {name} move?"),
        "Prediction": (_NEXT, f"What will the {name} do next?"),
        "Feasibility": (_EDGES, f"Which edge can the {name} reach?"),
    }[kind]
    return question, table[clip.direction], list(table.values())


def write_star(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``STAR_{split}.json`` (``val``, ``train``) and ``Charades_v1_480/{video_id}.mp4``, one question per clip."""
    kinds = ("Interaction", "Sequence", "Prediction", "Feasibility")
    for split, num in sizes.items():
        rng = stream(seed, "eval", "star", split)
        records = []
        for i in range(num):
            clip = random_clip(rng, config)
            video_id = f"{split[0].upper()}{i:04d}"
            start, end = _write_clip(root / "Charades_v1_480" / f"{video_id}.mp4", clip, config)
            kind = kinds[i % len(kinds)]
            question, answer, choices = _star_question(clip, rng, kind)
            rng.shuffle(choices)
            records.append(
                {
                    "question_id": f"{kind}_T{i % 7 + 1}_{i}",
                    "question": question,
                    "video_id": video_id,
                    "start": start,
                    "end": end,
                    "answer": answer,
                    "choices": [{"choice_id": k, "choice": c} for k, c in enumerate(choices)],
                }
            )
        (root / f"STAR_{split}.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")


def write_visdial(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``visdial_1.0_{split}.json`` (``val``, ``train``; ``sizes`` count answered rounds), the val split's
    dense annotations, and images named as VisDial's val images and COCO's train images."""
    for split, num in sizes.items():
        rng = stream(seed, "eval", "visdial", split)
        dialogs, rounds = [], []
        while sum(len(d["dialog"]) for d in dialogs) < num:
            image_id = len(dialogs) + 1
            scene = random_scene(rng, config)
            name = (
                f"VisualDialog_val2018/VisualDialog_val2018_{image_id:012d}.jpg"
                if split == "val"
                else f"train2014/COCO_train2014_{image_id:012d}.jpg"
            )
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(encode_image(render_scene(scene, config), "JPEG"))
            asked = questions(scene, min(VISDIAL_ROUNDS, num - len(rounds)), rng)
            rounds += [(image_id, k + 1, q) for k, q in enumerate(asked)]
            dialogs.append({"image_id": image_id, "caption": captions(scene, 1, rng)[0], "dialog": asked})
        # The world's answer vocabulary, so that every round has VISDIAL_OPTIONS distinct options.
        vocabulary = {*COLOURS, *SHAPES, *POSITIONS, "yes", "no", *map(str, range(6))}
        answers = sorted({q.answer for _, _, q in rounds} | vocabulary)
        kind = {}
        for _, _, q in rounds:
            kind.setdefault(q.answer, q.question_type)
        question_list = sorted({q.question for _, _, q in rounds})
        dense = []
        for dialog in dialogs:
            turns = []
            for q in dialog["dialog"]:
                options = [q.answer, *rng.sample([a for a in answers if a != q.answer], VISDIAL_OPTIONS - 1)]
                rng.shuffle(options)
                turns.append(
                    {
                        "question": question_list.index(q.question),
                        "answer": answers.index(q.answer),
                        "answer_options": [answers.index(a) for a in options],
                        "gt_index": options.index(q.answer),
                    }
                )
            if split == "val":
                round_id = rng.randrange(len(turns)) + 1
                q = dialog["dialog"][round_id - 1]
                relevance = [
                    1.0 if answers[a] == q.answer else 0.5 if kind.get(answers[a]) == q.question_type else 0.0
                    for a in turns[round_id - 1]["answer_options"]
                ]
                dense.append({"image_id": dialog["image_id"], "round_id": round_id, "gt_relevance": relevance})
            dialog["dialog"] = turns
        data = {"questions": question_list, "answers": answers, "dialogs": dialogs}
        body = {"version": "1.0", "split": f"{split}2018", "data": data}
        (root / f"visdial_1.0_{split}.json").write_text(json.dumps(body) + "\n", encoding="utf-8")
        if dense:
            (root / f"visdial_1.0_{split}_dense_annotations.json").write_text(json.dumps(dense) + "\n")


def _rareact_label(clip: Clip, verb_direction: str, noun: str) -> int:
    """RareAct's annotation of (move ``verb_direction``, ``noun``) on the clip, from what it shows."""
    verb_right = verb_direction == clip.direction
    present = noun in {s.shape for s in clip.scene.shapes}
    if verb_right and noun == clip.mover.shape:
        return 1
    if verb_right:
        return 4 if present else 2  # 4: the shape is there and something moves that way, but not it
    return 3 if present else 0


def write_rareact(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``rareact.csv`` (its one split; ``sizes`` counts rows) and ``videos/{video_id}.mp4``.

    Each clip gets two actions: the true one (a positive) half of the time, otherwise one that shares its
    verb or its noun, or neither, so every label kind occurs.
    """
    ((split, num),) = sizes.items()
    rng = stream(seed, "eval", "rareact", split)
    actions = [(d, s) for d in DIRECTIONS for s in SHAPES]  # class_id = index
    rows = []
    while len(rows) < num:
        clip = random_clip(rng, config)
        video_id = f"rare{len(rows) // RAREACT_ACTIONS_PER_CLIP:05d}"
        start, end = _write_clip(root / "videos" / f"{video_id}.mp4", clip, config)
        for _ in range(min(RAREACT_ACTIONS_PER_CLIP, num - len(rows))):
            true_action = not rows or rng.random() < 0.5  # the first row is a positive: mWAP is defined
            direction, shape = (clip.direction, clip.mover.shape) if true_action else rng.choice(actions)
            label = _rareact_label(clip, direction, shape)
            class_id = actions.index((direction, shape))
            rows.append([len(rows), video_id, start, end, class_id, f"move {direction}", shape, label])
    with open(root / "rareact.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "video_id", "start", "end", "class_id", "verb", "noun", "annotation"])
        writer.writerows(rows)


# task directory -> (writer, (eval split, support split), or (split,) for RareAct's single zero-shot split)
RANKING_BENCHMARKS = {
    "star": (write_star, ("val", "train")),
    "visdial": (write_visdial, ("val", "train")),
    "rareact": (write_rareact, ("test",)),
}
