"""The evaluation sets, each in the file layout of the real benchmark it stands in for.

Each writer fills ``{root}/{task}/`` so that ``flamingo eval --data-root {root} --task {task}``
reads it with the very reader that reads the downloaded benchmark:

==================  =====================  =========================================================
directory (task)    stands in for          content
==================  =====================  =========================================================
``vqav2``           VQAv2                  colour/shape/count/position/existence questions, 10 answers
``coco``            COCO Karpathy          5 captions per image in distinct phrasings
``hateful_memes``   HatefulMemes           label 1 = the written sentence is false of the picture
``imagenet``        ImageNet folder tree   30 classes "{colour} {shape}"
``msrvttqa``        MSRVTT-QA              direction of motion of a moving shape
``vatex`` …         VATEX, YouCook2,       captions of / questions on moving-shape clips, cut from longer videos
``nextqa``          iVQA, NExT-QA          where the benchmark annotates segments (see :mod:`.video_benchmarks`)
``shapesworld_attribute`` / ``shapesworld_binding``  episodic (see :mod:`.episodes`)
``text_binding``    —                      text-only binding probes for the LM go/no-go check
``star`` / ``visdial`` / ``rareact``  ranking benchmarks (see :mod:`.ranking_benchmarks`)
==================  =====================  =========================================================

Eval splits and support splits come from separate streams of the evaluation seed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from flamingo_vlm.video import write_video
from flamingo_vlm.world.episodes import attribute_episode, binding_episode, write_episodes
from flamingo_vlm.world.language import NUM_CAPTION_STYLES, captions, questions
from flamingo_vlm.world.memes import random_meme, render_meme
from flamingo_vlm.world.motion import clip_question, random_clip, render_clip
from flamingo_vlm.world.ranking_benchmarks import RANKING_BENCHMARKS
from flamingo_vlm.world.scene import (
    COLOURS,
    SHAPES,
    RenderConfig,
    encode_image,
    random_scene,
    render_scene,
    single_shape_scene,
)
from flamingo_vlm.world.seeding import stream
from flamingo_vlm.world.text import text_binding_probes
from flamingo_vlm.world.video_benchmarks import VIDEO_BENCHMARKS

VQA_ANSWERS_PER_QUESTION = 10
VQA_QUESTIONS_PER_IMAGE = 2
SUPPORT_ID_OFFSET = 1_000_000  # ids of support records, so ids never repeat across splits of one file
EPISODE_SHOTS = 16


def _dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_vqav2(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """VQAv2 files: ``sizes`` maps ``train``/``val`` to a number of *questions*."""
    for split, num_questions in sizes.items():
        rng = stream(seed, "eval", "vqav2", split)
        subtype = f"{split}2014"
        qs, anns = [], []
        image_id = 0
        while len(qs) < num_questions:
            image_id += 1
            scene = random_scene(rng, config)
            path = root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_image(render_scene(scene, config), "JPEG"))
            for k, q in enumerate(questions(scene, min(VQA_QUESTIONS_PER_IMAGE, num_questions - len(qs)), rng)):
                question_id = image_id * 1000 + k
                qs.append({"image_id": image_id, "question": q.question, "question_id": question_id})
                answers = [
                    {"answer": q.answer, "answer_confidence": "yes", "answer_id": a + 1}
                    for a in range(VQA_ANSWERS_PER_QUESTION)
                ]
                anns.append(
                    {
                        "question_type": q.question_type,
                        "multiple_choice_answer": q.answer,
                        "answers": answers,
                        "image_id": image_id,
                        "answer_type": q.answer_type,
                        "question_id": question_id,
                    }
                )
        header = {"info": {"description": "ShapesWorld VQA (VQAv2 format)"}, "license": {}, "data_subtype": subtype}
        _dump(
            root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
            {**header, "task_type": "Open-Ended", "data_type": "mscoco", "questions": qs},
        )
        _dump(root / f"v2_mscoco_{subtype}_annotations.json", {**header, "data_type": "mscoco", "annotations": anns})


def write_coco(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """Karpathy ``dataset_coco.json``: ``sizes`` maps Karpathy splits (``train``, ``test``) to images."""
    images, sentence_id = [], 0
    for split, num_images in sizes.items():
        rng = stream(seed, "eval", "coco", split)
        folder = "train2014" if split in ("train", "restval") else "val2014"
        for i in range(num_images):
            cocoid = i + 1 + (SUPPORT_ID_OFFSET if folder == "train2014" else 0)
            scene = random_scene(rng, config)
            filename = f"COCO_{folder}_{cocoid:012d}.jpg"
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / filename).write_bytes(encode_image(render_scene(scene, config), "JPEG"))
            sentences = []
            for raw in captions(scene, min(5, NUM_CAPTION_STYLES), rng):
                tokens = re.findall(r"[a-z0-9]+", raw.lower())
                sentences.append({"tokens": tokens, "raw": raw, "imgid": len(images), "sentid": sentence_id})
                sentence_id += 1
            images.append(
                {
                    "filepath": folder,
                    "sentids": [s["sentid"] for s in sentences],
                    "filename": filename,
                    "imgid": len(images),
                    "split": split,
                    "sentences": sentences,
                    "cocoid": cocoid,
                }
            )
    _dump(root / "dataset_coco.json", {"images": images, "dataset": "coco"})


def write_hateful_memes(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``{split}.jsonl`` (``train``, ``dev_seen``) and ``img/{id:05d}.png``; label 1 = the text lies."""
    next_id = 10000
    for split, num in sizes.items():
        rng = stream(seed, "eval", "hateful_memes", split)
        lines = []
        for _ in range(num):
            meme = random_meme(rng, config)
            next_id += 1
            img = f"img/{next_id:05d}.png"
            (root / "img").mkdir(parents=True, exist_ok=True)
            (root / img).write_bytes(encode_image(render_meme(meme, config)))
            lines.append(json.dumps({"id": next_id, "img": img, "label": meme.label, "text": meme.text}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_imagenet(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``{split}/{colour}_{shape}/NNNN.jpg`` and ``classnames.json``; ``sizes`` are images per class."""
    classes = {f"{c}_{s}": f"{c} {s}" for c in COLOURS for s in SHAPES}
    _dump(root / "classnames.json", classes)
    for split, per_class in sizes.items():
        rng = stream(seed, "eval", "imagenet", split)
        for class_dir in sorted(classes):
            colour, shape = class_dir.split("_")
            (root / split / class_dir).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                scene = single_shape_scene(rng, config, colour=colour, shape=shape)
                image = encode_image(render_scene(scene, config), "JPEG")
                (root / split / class_dir / f"{k:04d}.jpg").write_bytes(image)


def write_msrvttqa(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``{split}_qa.json`` (``train``, ``test``) and ``videos/video{id}.mp4``, one question per clip."""
    question_id = 0
    for split, num in sizes.items():
        rng = stream(seed, "eval", "msrvttqa", split)
        offset = 0 if split == "train" else SUPPORT_ID_OFFSET
        records = []
        (root / "videos").mkdir(parents=True, exist_ok=True)
        for i in range(num):
            clip = random_clip(rng, config)
            video_id = offset + i
            write_video(render_clip(clip, config), root / "videos" / f"video{video_id}.mp4", fps=1.0)
            question, answer = clip_question(clip, rng)
            records.append({"id": question_id, "video_id": video_id, "question": question, "answer": answer})
            question_id += 1
        _dump(root / f"{split}_qa.json", records)


def write_attribute(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    for split, num in sizes.items():
        rng = stream(seed, "eval", "shapesworld_attribute", split)
        episodes = [attribute_episode(rng, config, EPISODE_SHOTS) for _ in range(num)]
        write_episodes(root, split, "shapesworld_attribute", episodes, config)


def write_binding(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    for split, num in sizes.items():
        rng = stream(seed, "eval", "shapesworld_binding", split)
        episodes = [binding_episode(rng, config, EPISODE_SHOTS) for _ in range(num)]
        write_episodes(root, split, "shapesworld_binding", episodes, config)


def write_text_binding(root: Path, seed: int, sizes: dict[str, int], config: RenderConfig) -> None:
    """``{split}.jsonl`` of ``{"prompt", "candidates", "answer"}`` (8 shots, 2-way)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, num in sizes.items():
        probes = text_binding_probes(seed, num, split=split)
        (root / f"{split}.jsonl").write_text("".join(json.dumps(asdict(p)) + "\n" for p in probes), encoding="utf-8")


BenchmarkWriter = Callable[[Path, int, dict[str, int], RenderConfig], None]

# task directory -> (writer, (eval split, support split) or (eval split,) for episodic sets)
BENCHMARKS: dict[str, tuple[BenchmarkWriter, tuple[str, ...]]] = {
    "vqav2": (write_vqav2, ("val", "train")),
    "coco": (write_coco, ("test", "train")),
    "hateful_memes": (write_hateful_memes, ("dev_seen", "train")),
    "imagenet": (write_imagenet, ("val", "train")),
    "msrvttqa": (write_msrvttqa, ("test", "train")),
    "shapesworld_attribute": (write_attribute, ("test",)),
    "shapesworld_binding": (write_binding, ("test",)),
    "text_binding": (write_text_binding, ("test",)),
    **VIDEO_BENCHMARKS,  # vatex, youcook2, ivqa, nextqa
    **RANKING_BENCHMARKS,  # star, visdial, rareact (world/ranking_benchmarks.py)
}
