"""Fixtures for the training tests: tiny shards written here, a tiny model, a small TrainConfig."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from tiny import CORPUS, tiny_flamingo_kwargs

from flamingo_vlm import Flamingo
from flamingo_vlm.config import FlamingoConfig
from flamingo_vlm.data.document import Document, ImageItem, TextItem
from flamingo_vlm.train.config import (
    CheckpointConfig,
    DataConfig,
    DatasetConfig,
    LoggingConfig,
    OptimConfig,
    TrainConfig,
)


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory) -> dict[str, list[str]]:
    """Two shards each of web documents (2 images per page) and image–caption pairs."""
    root = tmp_path_factory.mktemp("train-shards")
    rng = random.Random(0)
    shards: dict[str, list[str]] = {"web": [], "pairs": []}
    for s in range(2):
        path = str(root / f"web-{s}.tar")
        with wds.TarWriter(path) as writer:
            for i in range(6):
                doc = Document(
                    [
                        TextItem(rng.choice(CORPUS)),
                        ImageItem("0.png"),
                        TextItem(rng.choice(CORPUS)),
                        ImageItem("1.png"),
                        TextItem(rng.choice(CORPUS)),
                    ]
                )
                writer.write(
                    {
                        "__key__": f"page{s}_{i}",
                        "json": doc.to_json(),
                        "0.png": png(100 * s + 2 * i),
                        "1.png": png(100 * s + 2 * i + 1),
                    }
                )
        shards["web"].append(path)
        path = str(root / f"pairs-{s}.tar")
        with wds.TarWriter(path) as writer:
            for i in range(8):
                writer.write({"__key__": f"pair{s}_{i}", "png": png(1000 + 100 * s + i), "txt": rng.choice(CORPUS)})
        shards["pairs"].append(path)
    return shards


@pytest.fixture()
def make_config(lm_dirs, vision_dirs, train_shards, tmp_path):
    """``make_config(**top_level_overrides)`` → a small TrainConfig over the tiny model and shards."""

    def make(**overrides) -> TrainConfig:
        config = TrainConfig(
            model=FlamingoConfig(lm=lm_dirs["llama"], vision=vision_dirs["nfnet"], **tiny_flamingo_kwargs()),
            data=DataConfig(
                datasets=[
                    DatasetConfig(
                        "web", "interleaved", train_shards["web"], weight=1.0, batch_size=2, max_length=40, max_images=2
                    ),
                    DatasetConfig(
                        "pairs", "image_text", train_shards["pairs"], weight=0.2, batch_size=2, max_length=16
                    ),
                ]
            ),
            optim=OptimConfig(lr=1e-3, warmup_steps=2),
            checkpoint=CheckpointConfig(every=5, keep_last=3),
            logging=LoggingConfig(progress=False),
            output_dir=str(tmp_path / "run"),
            max_steps=10,
            precision="fp32",
            device="cpu",
        )
        for key, value in overrides.items():
            setattr(config, key, value)
        return config

    return make


@pytest.fixture()
def tiny_model(lm_dirs, vision_dirs):
    """A factory: a fresh tiny Flamingo with the same initial weights on every call."""

    def make() -> Flamingo:
        import torch

        torch.manual_seed(0)
        return Flamingo.from_components(lm_dirs["llama"], vision_dirs["nfnet"], **tiny_flamingo_kwargs())

    return make
