"""Helpers for the data tests: tiny images, videos and shards, all generated here."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
import webdataset as wds
from PIL import Image

IMAGE_SIZE = 16


def transform(image: Image.Image) -> torch.Tensor:
    """A stand-in for the processor's transform: resize and scale to [0, 1], (c, h, w)."""
    array = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def image_bytes(
    size: tuple[int, int] = (80, 80), color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def noisy_jpeg(seed: int, size: tuple[int, int] = (96, 96)) -> bytes:
    """A JPEG with enough entropy that truncating it really cuts pixel data."""
    pixels = np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_shard(path: str | os.PathLike, records: list[dict]) -> str:
    with wds.TarWriter(os.fspath(path)) as writer:
        for record in records:
            writer.write(record)
    return os.fspath(path)
