"""The world's files are read by the real pipeline: training shards by the data package's datasets,
evaluation sets by the evaluation harness's readers, episodes by :func:`read_episodes`."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flamingo_vlm.data import ImageTextDataset, InterleavedDataset, Slot, VideoTextDataset, collate
from flamingo_vlm.data.document import Document
from flamingo_vlm.evaluate.metrics.vqa import vqa_accuracy
from flamingo_vlm.evaluate.prompting import PromptTemplate, build_prompt
from flamingo_vlm.evaluate.tasks import get_task
from flamingo_vlm.tokenization import MEDIA_TOKEN
from flamingo_vlm.video import read_video_frames
from flamingo_vlm.world import PRESETS, read_episodes
from flamingo_vlm.world.episodes import ATTRIBUTE_TASK_KINDS
from flamingo_vlm.world.scene import ATTRIBUTE_VALUES, COLOURS

SIZES = PRESETS["tiny"]
IMAGE_SIZE = 16


def transform(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)  # (c, h, w)


def one_epoch(dataset) -> tuple[list[dict], Counter]:
    samples, skipped = [], Counter()
    for sample in dataset.samples(Slot()):
        skipped.update(sample["__skipped__"])
        if sample["__position__"].epoch > 0:
            return samples, skipped
        samples.append(sample)
    raise AssertionError("unreachable: datasets are infinite")


def test_web_pages_become_documents_in_dom_order(world):
    manifest = json.loads((world / "world.json").read_text())
    assert "pages: kept 12, skipped 0" in manifest["train"]["web_build"]
    assert "images: kept" in manifest["train"]["web_build"] and "skipped 0 (none)" in manifest["train"]["web_build"]
    html = sorted((world / "train/pages").rglob("*.html"))
    assert len(html) == SIZES.pages
    with tarfile.open(world / manifest["train"]["web"][0]) as tar:
        doc = Document.from_json(tar.extractfile(next(m for m in tar if m.name.endswith(".json"))).read())
    page = html[0].read_text()
    assert "ShapesWorld |" not in " ".join(t.text for t in doc.texts)  # navigation dropped
    # text and images alternate as on the page: every image is preceded or followed by text
    kinds = [type(item).__name__ for item in doc.items]
    assert kinds.count("ImageItem") == page.count("<img ")
    assert "ImageItem" in kinds and "TextItem" in kinds


@pytest.mark.parametrize(
    ("name", "cls", "count"),
    [
        ("web", InterleavedDataset, SIZES.pages),
        ("pairs", ImageTextDataset, SIZES.pairs),
        ("videos", VideoTextDataset, SIZES.videos),
    ],
)
def test_training_shards_build_batches(world, world_tokenizer, name, cls, count):
    dataset = cls(str(world / "train" / name), world_tokenizer, transform, seed=0)
    samples, skipped = one_epoch(dataset)
    assert not skipped and len(samples) == count
    batch = collate(samples[:4])
    b, length = batch["input_ids"].shape
    assert b == 4 and batch["labels"].shape == (b, length)
    assert batch["pixel_values"].shape[0] == 4 and batch["pixel_values"].shape[-3:] == (3, IMAGE_SIZE, IMAGE_SIZE)
    media_id = world_tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    assert torch.equal((batch["input_ids"] == media_id).sum(1), batch["media_mask"].sum(1))
    if name == "videos":
        assert batch["pixel_values"].shape[2] == 8  # frames: 4-8 at 1 FPS, stretched to 8


def test_videos_hold_one_frame_per_second(world):
    records = json.loads((world / "eval/msrvttqa/test_qa.json").read_text())
    for record in records:
        frames = read_video_frames(world / "eval/msrvttqa/videos" / f"video{record['video_id']}.mp4", fps=1.0)
        assert 4 <= len(frames) <= 8 and frames[0].size == (64, 64)


def _read(world: Path, task: str, split: str):
    split_data = get_task(task).reader(world / "eval" / task, split)
    assert not split_data.bad, split_data.bad
    return split_data


def test_vqa_files_parse_with_ten_answers(world):
    val = _read(world, "vqav2", "val")
    assert len(val.examples) == SIZES.eval_examples
    assert len(_read(world, "vqav2", "train").examples) == SIZES.support_examples
    for example in val.examples:
        assert len(example.references) == 10 and vqa_accuracy(example.answer, example.references) == 1.0
        assert example.fields["question"].endswith("?")


def test_karpathy_captions_parse(world):
    test, train = _read(world, "coco", "test"), _read(world, "coco", "train")
    assert len(test.examples) == SIZES.eval_examples and len(train.examples) == SIZES.support_examples
    assert all(len(set(e.references)) == 5 for e in test.examples)
    assert not {e.id for e in test.examples} & {e.id for e in train.examples}


def test_hateful_memes_parse_with_both_labels(world):
    dev = _read(world, "hateful_memes", "dev_seen")
    train = _read(world, "hateful_memes", "train")
    assert dev.candidates == ["no", "yes"] and len(dev.examples) == SIZES.eval_examples
    assert {e.label for e in train.examples} == {0, 1}


def test_image_folder_parses_with_class_names(world):
    val, train = _read(world, "imagenet", "val"), _read(world, "imagenet", "train")
    assert val.candidates == train.candidates and len(val.candidates) == 30 and "red circle" in val.candidates
    assert all(val.candidates[e.label] == e.answer for e in val.examples)


def test_video_qa_parses(world):
    test = _read(world, "msrvttqa", "test")
    assert len(test.examples) == SIZES.eval_examples
    assert len(_read(world, "msrvttqa", "train").examples) == SIZES.support_examples
    assert {e.answer for e in test.examples} <= {"left", "right", "up", "down"}


def test_attribute_episodes_name_one_kind_each(world):
    template, episodes = read_episodes(world / "eval/shapesworld_attribute", "test")
    assert template == "<image>Output: {answer}<|endofchunk|>" and len(episodes) == SIZES.episodes
    for episode in episodes:
        assert episode.kind in ATTRIBUTE_TASK_KINDS and len(episode.support) == 16
        values = ATTRIBUTE_VALUES[episode.kind]
        assert episode.query.answer in values and all(s.answer in values for s in episode.support)
        assert episode.candidates[episode.label()] == episode.query.answer
        prompt = build_prompt(PromptTemplate(template), episode.query, episode.support[:4])
        assert prompt.text.count(MEDIA_TOKEN) == len(prompt.media) == 5 and prompt.text.endswith("Output:")
        assert all(Path(m).is_file() for m in prompt.media)


def test_binding_episodes_are_balanced_and_two_way(world):
    _, episodes = read_episodes(world / "eval/shapesworld_binding", "test")
    for episode in episodes:
        assert len(episode.candidates) == 2 and set(episode.bindings) == set(episode.candidates)
        for k in (2, 4, 8, 16):
            counts = Counter(s.answer for s in episode.support[:k])
            assert counts == Counter({w: k // 2 for w in episode.candidates})
        # the image shows the attribute value bound to its word (checked on the rendered colour)
        if episode.kind == "colour":
            pixels = np.asarray(Image.open(episode.query.media[0]), dtype=np.float32).reshape(-1, 3)
            target = np.array(COLOURS[episode.bindings[episode.query.answer]], dtype=np.float32)
            assert (np.abs(pixels - target).sum(-1) < 60).sum() > 20


def test_text_binding_probes_are_written(world):
    lines = (world / "eval/text_binding/test.jsonl").read_text().splitlines()
    assert len(lines) == SIZES.episodes
    probe = json.loads(lines[0])
    assert probe["answer"] in probe["candidates"] and probe["prompt"].endswith(":")
