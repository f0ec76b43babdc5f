"""Writers of tiny benchmarks in each benchmark's *published* layout, for the readers and the runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ranking_layouts import write_rareact, write_star, write_visdial

COLOURS = ["red", "green", "blue", "yellow"]
RGB = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 40)}


def write_image(path: Path, colour: str, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), RGB[colour]).save(path)


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def write_vqa_format(root: Path, prefix: str, counts: dict[str, int]) -> None:
    """VQAv2 (prefix "v2_") / OK-VQA (prefix "") question + annotation files and COCO-named images."""
    for split, n in counts.items():
        questions, annotations = [], []
        for i in range(n):
            image_id, qid = 1000 * (split == "val") + i, 10 * i + 1
            write_image(root / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}.jpg", _colour(i))
            questions.append({"image_id": image_id, "question": "What colour is the square?", "question_id": qid})
            answers = [_colour(i)] * 7 + ["dark " + _colour(i)] * 3
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)
                    ],
                    "multiple_choice_answer": _colour(i),
                    "question_type": "what color is the",
                    "answer_type": "other",
                }
            )
        (root / f"{prefix}OpenEnded_mscoco_{split}2014_questions.json").write_text(json.dumps({"questions": questions}))
        (root / f"{prefix}mscoco_{split}2014_annotations.json").write_text(json.dumps({"annotations": annotations}))


def write_textvqa(root: Path, counts: dict[str, int]) -> None:
    for split, n in counts.items():
        data = []
        for i in range(n):
            image_id = f"{split}{i:04d}"
            write_image(root / "train_images" / f"{image_id}.jpg", _colour(i))
            data.append(
                {"question_id": i, "image_id": image_id, "question": "what is written?", "answers": [_colour(i)] * 10}
            )
        (root / f"TextVQA_0.5.1_{split}.json").write_text(json.dumps({"dataset_name": "textvqa", "data": data}))


def write_vizwiz(root: Path, counts: dict[str, int]) -> None:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        records = []
        for i in range(n):
            name = f"VizWiz_{split}_{i:08d}.jpg"
            write_image(root / split / name, _colour(i))
            answers = [{"answer": _colour(i), "answer_confidence": "yes"}] * 10
            records.append({"image": name, "question": "What colour is this?", "answers": answers, "answerable": 1})
        (root / "Annotations" / f"{split}.json").write_text(json.dumps(records))


def write_karpathy(root: Path, dataset: str, counts: dict[str, int]) -> None:
    images = []
    for split, n in counts.items():
        for i in range(n):
            idx = len(images)
            if dataset == "coco":
                filepath, filename = "val2014", f"COCO_val2014_{idx:012d}.jpg"
                write_image(root / filepath / filename, _colour(i))
                extra = {"filepath": filepath, "cocoid": idx}
            else:
                filename = f"{idx}.jpg"
                write_image(root / "flickr30k-images" / filename, _colour(i))
                extra = {}
            sentences = [
                {"raw": f"A {_colour(i)} square.", "tokens": ["a", _colour(i), "square"]},
                {"raw": f"a square that is {_colour(i)}", "tokens": []},
            ]
            images.append({"filename": filename, "split": split, "sentences": sentences, "imgid": idx, **extra})
    (root / f"dataset_{dataset}.json").write_text(json.dumps({"images": images, "dataset": dataset}))


def write_hateful_memes(root: Path, counts: dict[str, int]) -> None:
    for split, n in counts.items():
        lines = []
        for i in range(n):
            write_image(root / "img" / f"{split}{i:05d}.png", _colour(i))
            lines.append(
                json.dumps({"id": f"{split}{i}", "img": f"img/{split}{i:05d}.png", "label": i % 2, "text": f"meme {i}"})
            )
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def write_image_folder(root: Path, counts: dict[str, int]) -> None:
    dirs = ["n01_red", "n02_green", "n03_blue"]
    for split, n in counts.items():
        for i in range(n):
            d = dirs[i % 3]
            write_image(root / split / d / f"{i}.png", d.split("_")[1])
    (root / "classnames.json").write_text(
        json.dumps({"n01_red": "red thing", "n02_green": "green thing", "n03_blue": "blue thing"})
    )


def write_video_qa(root: Path, dataset: str, counts: dict[str, int]) -> None:
    from flamingo_vlm.video import write_video

    (root / "videos").mkdir(parents=True, exist_ok=True)
    vid = 0
    names = []
    for split, n in counts.items():
        records = []
        for i in range(n):
            vid += 1
            frames = [np.full((16, 16, 3), RGB[_colour(i + t)], dtype=np.uint8) for t in range(3)]
            if dataset == "msvdqa":
                name = f"clip{vid}_0_3"
                names.append(f"{name} vid{vid}")
                write_video(frames, root / "videos" / f"{name}.avi", fps=1.0, container_format="avi")
            else:
                write_video(frames, root / "videos" / f"video{vid}.mp4", fps=1.0)
            records.append({"answer": _colour(i), "id": vid, "question": "what colour is first?", "video_id": vid})
        (root / f"{split}_qa.json").write_text(json.dumps(records))
    if names:
        (root / "youtube_mapping.txt").write_text("\n".join(names) + "\n")


def write_episodic(root: Path, task: str, counts: dict[str, int]) -> None:
    """ShapesWorld episodes (each query with 4 support examples), written by the world generator."""
    import random

    from flamingo_vlm.world.episodes import attribute_episode, binding_episode, write_episodes
    from flamingo_vlm.world.scene import RenderConfig

    config, rng = RenderConfig(image_size=24), random.Random(task)
    make = attribute_episode if task == "shapesworld_attribute" else binding_episode
    for split, n in counts.items():
        write_episodes(root, split, task, [make(rng, config, 4) for _ in range(n)], config)


def write_world_video_set(root: Path, task: str, counts: dict[str, int]) -> None:
    """VATEX / YouCook2 / iVQA / NExT-QA files as ShapesWorld writes them (the published layouts)."""
    from flamingo_vlm.world.scene import RenderConfig
    from flamingo_vlm.world.video_benchmarks import VIDEO_BENCHMARKS

    VIDEO_BENCHMARKS[task][0](root, 0, counts, RenderConfig(image_size=24))


def write_benchmark(task: str, root: Path, n_train: int = 6, n_eval: int = 4) -> Path:
    """Write benchmark ``task`` under ``root`` with the task's default support and eval split names."""
    from flamingo_vlm.evaluate.tasks import get_task
    from flamingo_vlm.world.video_benchmarks import VIDEO_BENCHMARKS

    spec = get_task(task)
    counts = {spec.support_split: n_train, spec.eval_split: n_eval}
    writers: dict[str, Callable[[], None]] = {
        "vqav2": lambda: write_vqa_format(root, "v2_", counts),
        "okvqa": lambda: write_vqa_format(root, "", counts),
        "textvqa": lambda: write_textvqa(root, counts),
        "vizwiz": lambda: write_vizwiz(root, counts),
        "coco": lambda: write_karpathy(root, "coco", counts),
        "flickr30k": lambda: write_karpathy(root, "flickr30k", counts),
        "hateful_memes": lambda: write_hateful_memes(root, counts),
        "imagenet": lambda: write_image_folder(root, counts),
        "msvdqa": lambda: write_video_qa(root, "msvdqa", counts),
        "msrvttqa": lambda: write_video_qa(root, "msrvttqa", counts),
        "shapesworld_attribute": lambda: write_episodic(root, task, {spec.eval_split: n_eval}),
        "shapesworld_binding": lambda: write_episodic(root, task, {spec.eval_split: n_eval}),
        **{name: (lambda name=name: write_world_video_set(root, name, counts)) for name in VIDEO_BENCHMARKS},
        "star": lambda: write_star(root, counts),
        "visdial": lambda: write_visdial(root, counts),
        "rareact": lambda: write_rareact(root, n_eval),
    }
    root.mkdir(parents=True, exist_ok=True)
    writers[task]()
    return root


@pytest.fixture
def benchmark_writer(tmp_path) -> Callable[..., Path]:
    return lambda task, **kw: write_benchmark(task, tmp_path / task, **kw)


@pytest.fixture
def fixture_colours() -> dict[str, tuple[int, int, int]]:
    """The RGB of each colour the benchmark writers paint with."""
    return dict(RGB)
