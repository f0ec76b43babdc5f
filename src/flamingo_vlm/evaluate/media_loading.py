"""Decoding an example's media files into what the processor takes, with failures made countable."""

from __future__ import annotations

from typing import Literal

from PIL import Image, UnidentifiedImageError

from flamingo_vlm.processing import FlamingoProcessor


class MediaError(ValueError):
    """A media file that exists but cannot be decoded."""


def load_media(
    path: str, kind: Literal["image", "video"], processor: FlamingoProcessor
) -> Image.Image | list[Image.Image]:
    """An image as a PIL image, or a video as its sampled frames (at the processor's fps and frame budget)."""
    try:
        if kind == "video":
            return processor.load_video(path)
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise MediaError(f"cannot decode {path}: {err}") from err
