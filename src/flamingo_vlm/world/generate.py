"""``generate_world``: every corpus and benchmark of a ShapesWorld, sized by a preset.

Layout of ``out/``::

    world.json                    what was generated: seeds, sizes, paths, build summary
    train/pages/NNNN/*.html|png   web pages with their images
    train/web/web-*.tar           interleaved documents (``InterleavedDataset``)
    train/pairs/pairs-*.tar       image–text pairs (``ImageTextDataset``)
    train/videos/videos-*.tar     video–text pairs (``VideoTextDataset``)
    train/text.jsonl              LM pretraining text
    eval/{task}/...               benchmark files (``flamingo eval --data-root out/eval``)
    eval/pairs/pairs-*.tar        held-out image–text pairs (the trainer's vision-use probe)

Training data come from ``seed``, evaluation sets from ``eval_seed`` (default ``seed + 1``); the
streams are also namespaced (``train``/``eval``), so no evaluation example replays a training one
whatever the two seeds are.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from flamingo_vlm.world.benchmarks import BENCHMARKS
from flamingo_vlm.world.corpora import write_pages, write_pair_shards, write_text, write_video_shards, write_web_shards
from flamingo_vlm.world.scene import COLOURS, SHAPES, RenderConfig
from flamingo_vlm.world.web import PageMix


@dataclass(frozen=True)
class WorldSizes:
    """How much of everything: training corpora, then per-benchmark eval and support split sizes."""

    pages: int
    pairs: int
    videos: int
    text_docs: int
    eval_examples: int  # per benchmark (questions, images, memes, clips); classification: rounded up per class
    support_examples: int  # per benchmark, the split few-shot examples are drawn from
    episodes: int  # Attribute, Binding and text-binding episodes
    pages_per_shard: int
    pairs_per_shard: int
    videos_per_shard: int

    def __post_init__(self) -> None:
        if min(asdict(self).values()) < 1:
            raise ValueError(f"every size must be >= 1, got {self}")

    def split_sizes(self, task: str, splits: tuple[str, ...]) -> dict[str, int]:
        """``{split: size}`` for one benchmark: eval split first, then support split."""
        if len(splits) == 1:
            return {splits[0]: self.episodes}
        eval_size, support_size = self.eval_examples, self.support_examples
        if task == "imagenet":  # sizes per class
            classes = len(COLOURS) * len(SHAPES)
            eval_size, support_size = math.ceil(eval_size / classes), math.ceil(support_size / classes)
        return {splits[0]: eval_size, splits[1]: support_size}


PRESETS: dict[str, WorldSizes] = {
    # seconds: for tests and smoke runs
    "tiny": WorldSizes(
        pages=12,
        pairs=48,
        videos=12,
        text_docs=200,
        eval_examples=8,
        support_examples=24,
        episodes=8,
        pages_per_shard=4,
        pairs_per_shard=16,
        videos_per_shard=4,
    ),
    # the ≤10-minute CPU recipe
    "quick": WorldSizes(
        pages=2000,
        pairs=6000,
        videos=600,
        text_docs=20000,
        eval_examples=100,
        support_examples=300,
        episodes=100,
        pages_per_shard=250,
        pairs_per_shard=1000,
        videos_per_shard=100,
    ),
    # the ≤60-minute recipe
    "full": WorldSizes(
        pages=12000,
        pairs=40000,
        videos=4000,
        text_docs=150000,
        eval_examples=500,
        support_examples=1000,
        episodes=300,
        pages_per_shard=500,
        pairs_per_shard=2000,
        videos_per_shard=250,
    ),
}


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    preset: str = "quick"
    eval_seed: int | None = None  # default: seed + 1
    render: RenderConfig = field(default_factory=RenderConfig)
    pages: PageMix = field(default_factory=PageMix)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.eval_seed == self.seed:
            raise ValueError("eval_seed must differ from seed: evaluation sets never come from the training seed")

    @property
    def sizes(self) -> WorldSizes:
        return PRESETS[self.preset]

    @property
    def evaluation_seed(self) -> int:
        return self.seed + 1 if self.eval_seed is None else self.eval_seed


def generate_training(out: Path, config: WorldConfig, progress: bool = False) -> dict[str, Any]:
    sizes, render = config.sizes, config.render
    train = out / "train"
    write_pages(train / "pages", config.seed, sizes.pages, render, config.pages, progress)
    report = write_web_shards(train / "pages", train / "web", render, sizes.pages_per_shard, progress)
    pairs = write_pair_shards(train / "pairs", config.seed, sizes.pairs, render, sizes.pairs_per_shard, progress)
    videos = write_video_shards(train / "videos", config.seed, sizes.videos, render, sizes.videos_per_shard, progress)
    text = write_text(train / "text.jsonl", config.seed, sizes.text_docs)

    def relative(paths: list[str]) -> list[str]:  # the manifest stays valid when the world is moved
        return [str(Path(p).relative_to(out)) for p in paths]

    return {
        "web": relative(report.shards),
        "pairs": relative(pairs),
        "videos": relative(videos),
        "text": str(text.relative_to(out)),
        "web_build": report.summary(),
    }


def generate_eval(out: Path, config: WorldConfig, progress: bool = False) -> dict[str, Any]:
    written = {}
    for task, (writer, splits) in tqdm(BENCHMARKS.items(), desc="benchmarks", disable=not progress):
        split_sizes = config.sizes.split_sizes(task, splits)
        writer(out / "eval" / task, config.evaluation_seed, split_sizes, config.render)
        written[task] = {"path": f"eval/{task}", "splits": split_sizes}
    sizes = config.sizes
    pairs = write_pair_shards(
        out / "eval" / "pairs",
        config.evaluation_seed,
        sizes.eval_examples,
        config.render,
        sizes.pairs_per_shard,
        split="eval",
    )
    written["pairs"] = {"path": "eval/pairs", "shards": [str(Path(p).relative_to(out)) for p in pairs]}
    return written


def generate_world(out: str | Path, config: WorldConfig, progress: bool = False) -> dict[str, Any]:
    """Write the whole world under ``out`` and return (and save as ``world.json``) its manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "seed": config.seed,
        "eval_seed": config.evaluation_seed,
        "preset": config.preset,
        "sizes": asdict(config.sizes),
        "render": asdict(config.render),
        "pages": asdict(config.pages),
        "train": generate_training(out, config, progress),
        "eval": generate_eval(out, config, progress),
    }
    (out / "world.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest
