"""The training corpora, written through the real data pipeline.

* web pages: HTML files with their PNGs next to them, turned into WebDataset shards by the same
  function as ``flamingo data build-web`` (so the world exercises the HTML parser and the filters);
* image–text pairs, alt-text style (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``, the img2dataset layout);
* video–text pairs (``KEY.mp4`` + ``KEY.txt``), frames at 1 FPS;
* text documents for LM pretraining (``text.jsonl``, one ``{"text": ...}`` per line).

Every shard is written with a zero mtime so that the same seed gives byte-identical pair and video
shards; web shards are written by ``build_web_shards``, whose records are identical for a seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import webdataset as wds
from tqdm.auto import tqdm

from flamingo_vlm.data.build import BuildReport, build_web_shards, find_pages
from flamingo_vlm.data.html import ImageFilter
from flamingo_vlm.video import write_video
from flamingo_vlm.world.language import caption
from flamingo_vlm.world.motion import clip_caption, random_clip, render_clip
from flamingo_vlm.world.scene import RenderConfig, encode_image, random_scene, render_scene
from flamingo_vlm.world.seeding import stream
from flamingo_vlm.world.text import text_corpus
from flamingo_vlm.world.web import PageMix, random_page

PAGES_PER_DIRECTORY = 1000


def _shard_writer(directory: Path, prefix: str, per_shard: int) -> wds.ShardWriter:
    directory.mkdir(parents=True, exist_ok=True)
    return wds.ShardWriter(str(directory / f"{prefix}-%06d.tar"), maxcount=per_shard, verbose=0, mtime=0)


def write_pages(
    directory: Path, seed: int, num_pages: int, config: RenderConfig, mix: PageMix, progress: bool = False
) -> list[Path]:
    """``{directory}/NNNN/pageNNNNNN.html`` with its images beside it; returns the HTML paths."""
    rng = stream(seed, "train", "pages")
    paths = []
    for i in tqdm(range(num_pages), desc="web pages", unit="page", disable=not progress):
        folder = directory / f"{i // PAGES_PER_DIRECTORY:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        page = random_page(rng, config, mix, prefix=f"page{i:06d}")
        for name, image in page.images.items():
            (folder / name).write_bytes(encode_image(image))
        path = folder / f"page{i:06d}.html"
        path.write_text(page.to_html(), encoding="utf-8")
        paths.append(path)
    return paths


def write_web_shards(
    pages_dir: Path, shards_dir: Path, config: RenderConfig, per_shard: int, progress: bool = False
) -> BuildReport:
    """``flamingo data build-web`` on the pages; the size filter is relaxed only for images under 64 px."""
    image_filter = ImageFilter(min_side=min(ImageFilter.min_side, config.image_size))
    pages = find_pages([pages_dir])
    return build_web_shards(
        pages, shards_dir, "web", per_shard, image_filter=image_filter, progress=progress, roots=[pages_dir]
    )


def write_pair_shards(
    directory: Path,
    seed: int,
    num_pairs: int,
    config: RenderConfig,
    per_shard: int,
    progress: bool = False,
    split: str = "train",
) -> list[str]:
    """Image–caption pairs; ``split="eval"`` draws from the evaluation stream (held-out pairs)."""
    rng = stream(seed, split, "pairs")
    with _shard_writer(directory, "pairs", per_shard) as writer:
        for i in tqdm(range(num_pairs), desc="image-text pairs", unit="pair", disable=not progress):
            scene = random_scene(rng, config)
            text = caption(scene, rng)
            meta = {"caption": text, "width": config.image_size, "height": config.image_size}
            image = encode_image(render_scene(scene, config), "JPEG")
            writer.write({"__key__": f"pair{i:09d}", "jpg": image, "txt": text, "json": json.dumps(meta)})
        count = writer.shard
    return [str(directory / f"pairs-{k:06d}.tar") for k in range(count)]


def write_video_shards(
    directory: Path, seed: int, num_videos: int, config: RenderConfig, per_shard: int, progress: bool = False
) -> list[str]:
    rng = stream(seed, "train", "videos")
    with _shard_writer(directory, "videos", per_shard) as writer:
        for i in tqdm(range(num_videos), desc="video-text pairs", unit="video", disable=not progress):
            clip = random_clip(rng, config)
            video = write_video(render_clip(clip, config), fps=1.0)
            writer.write({"__key__": f"video{i:09d}", "mp4": video, "txt": clip_caption(clip, rng)})
        count = writer.shard
    return [str(directory / f"videos-{k:06d}.tar") for k in range(count)]


def write_text(path: Path, seed: int, num_docs: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for doc in text_corpus(seed, num_docs):
            f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    return path


def read_text(path: str | os.PathLike) -> list[str]:
    """The documents of a ``text.jsonl`` written by :func:`write_text`."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]
