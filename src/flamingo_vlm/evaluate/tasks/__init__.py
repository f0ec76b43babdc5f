"""The benchmark registry: each name maps to a :class:`TaskSpec` reading that benchmark's published layout.

The file layouts below are the ones the datasets ship with (see ``docs/evaluate.md``); ShapesWorld
writes its evaluation sets in the same layouts, so the same code scores both.
"""

from __future__ import annotations

from functools import partial

from flamingo_vlm.evaluate.tasks.base import (
    CAPTION_TEMPLATE,
    OPEN_ENDED_TEMPLATE_VQA,
    Example,
    Prediction,
    Split,
    TaskSpec,
)
from flamingo_vlm.evaluate.tasks.captioning import read_karpathy, score_captions
from flamingo_vlm.evaluate.tasks.classification import read_image_folder, score_classification
from flamingo_vlm.evaluate.tasks.episodic import read_episodic, score_episodic
from flamingo_vlm.evaluate.tasks.hateful_memes import HATEFUL_MEMES_TEMPLATE, read_hateful_memes, score_hateful_memes
from flamingo_vlm.evaluate.tasks.ivqa import read_ivqa, score_ivqa
from flamingo_vlm.evaluate.tasks.nextqa import read_nextqa, score_nextqa
from flamingo_vlm.evaluate.tasks.rareact import read_rareact, score_rareact
from flamingo_vlm.evaluate.tasks.star import read_star, score_star
from flamingo_vlm.evaluate.tasks.vatex import read_vatex
from flamingo_vlm.evaluate.tasks.video_qa import read_video_qa, score_video_qa
from flamingo_vlm.evaluate.tasks.visdial import VISDIAL_TEMPLATE, read_visdial, score_visdial
from flamingo_vlm.evaluate.tasks.vqa import read_textvqa, read_vizwiz, read_vqa_format, score_vqa
from flamingo_vlm.evaluate.tasks.youcook2 import read_youcook2

_COCO_IMAGES = "{split}2014/COCO_{split}2014_{image_id:012d}.jpg"


def _vqa(name: str, reader, eval_split: str = "val") -> TaskSpec:
    return TaskSpec(
        name,
        reader,
        OPEN_ENDED_TEMPLATE_VQA,
        "generate",
        score_vqa,
        eval_split,
        "train",
        max_new_tokens=5,
        vqa_scoring=True,
    )


def _caption(name: str, reader, eval_split: str = "test") -> TaskSpec:
    return TaskSpec(name, reader, CAPTION_TEMPLATE, "generate", score_captions, eval_split, "train", max_new_tokens=20)


def _video_qa(name: str, videos: str) -> TaskSpec:
    reader = partial(read_video_qa, videos=videos)
    return TaskSpec(
        name, reader, OPEN_ENDED_TEMPLATE_VQA, "generate", score_video_qa, "test", "train", "video", max_new_tokens=5
    )


# The 16 benchmarks Flamingo is evaluated on (the paper's Table 1 and its appendix).
PAPER_BENCHMARKS = (
    "okvqa", "vqav2", "coco", "msvdqa", "vatex", "visdial", "youcook2", "textvqa",
    "hateful_memes", "ivqa", "rareact", "flickr30k", "star", "msrvttqa", "vizwiz", "nextqa",
)  # fmt: skip

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _vqa(
            "vqav2",
            partial(
                read_vqa_format,
                questions="v2_OpenEnded_mscoco_{split}2014_questions.json",
                annotations="v2_mscoco_{split}2014_annotations.json",
                images=_COCO_IMAGES,
            ),
        ),
        _vqa(
            "okvqa",
            partial(
                read_vqa_format,
                questions="OpenEnded_mscoco_{split}2014_questions.json",
                annotations="mscoco_{split}2014_annotations.json",
                images=_COCO_IMAGES,
            ),
        ),
        _vqa(
            "textvqa",
            partial(read_textvqa, annotations="TextVQA_0.5.1_{split}.json", images="train_images/{image_id}.jpg"),
        ),
        _vqa("vizwiz", partial(read_vizwiz, annotations="Annotations/{split}.json", images="{split}/{image}")),
        _caption("coco", partial(read_karpathy, annotations="dataset_coco.json", images="{filepath}/{filename}")),
        _caption(
            "flickr30k",
            partial(read_karpathy, annotations="dataset_flickr30k.json", images="flickr30k-images/{filename}"),
        ),
        TaskSpec(
            "hateful_memes",
            read_hateful_memes,
            HATEFUL_MEMES_TEMPLATE,
            "rank",
            score_hateful_memes,
            "dev_seen",
            "train",
        ),
        TaskSpec("imagenet", read_image_folder, CAPTION_TEMPLATE, "rank", score_classification, "val", "train"),
        _video_qa("msvdqa", "videos/{name}.avi"),
        _video_qa("msrvttqa", "videos/video{video_id}.mp4"),
        # Video captioning of (cut) clips, and open-ended video QA with their own metrics.
        TaskSpec(
            "vatex", read_vatex, CAPTION_TEMPLATE, "generate", score_captions, "public_test", "train", "video", 20
        ),
        TaskSpec("youcook2", read_youcook2, CAPTION_TEMPLATE, "generate", score_captions, "val", "train", "video", 20),
        TaskSpec("ivqa", read_ivqa, OPEN_ENDED_TEMPLATE_VQA, "generate", score_ivqa, "test", "train", "video", 5),
        TaskSpec(
            "nextqa", read_nextqa, OPEN_ENDED_TEMPLATE_VQA, "generate", score_nextqa, "test", "train", "video", 10
        ),
        # Ranking benchmarks: each query ranks its own candidates (STAR's 4 choices, VisDial's 100 options,
        # RareAct's actions); RareAct is zero-shot, each query alone (episodic, with no support).
        TaskSpec("star", read_star, OPEN_ENDED_TEMPLATE_VQA, "rank", score_star, "val", "train", "video"),
        TaskSpec("visdial", read_visdial, VISDIAL_TEMPLATE, "rank", score_visdial, "val", "train"),
        TaskSpec(
            "rareact",
            read_rareact,
            CAPTION_TEMPLATE,
            "rank",
            score_rareact,
            "test",
            "test",
            "video",
            episodic=True,
            zero_shot_only=True,
        ),
        # ShapesWorld's in-context tasks: which attribute to name (Attribute) or which invented word
        # means what (Binding) is given only by each query's own support examples.
        TaskSpec(
            "shapesworld_attribute",
            read_episodic,
            CAPTION_TEMPLATE,
            "generate",
            score_episodic,
            "test",
            "test",
            max_new_tokens=5,
            episodic=True,
        ),
        TaskSpec(
            "shapesworld_binding",
            read_episodic,
            CAPTION_TEMPLATE,
            "rank",
            score_episodic,
            "test",
            "test",
            episodic=True,
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Example", "Prediction", "Split", "TaskSpec", "get_task"]
