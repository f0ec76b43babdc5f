"""Image–text and video–text pairs (the paper's ALIGN/LTIP and VTP) from WebDataset shards.

A pair is one chunk, ``<image>{text}<|endofchunk|>``, truncated to ``max_length`` tokens while
keeping the closing ``<|endofchunk|>`` (the model must learn to end a caption).  A video is a
media item of ``num_frames`` frames sampled at ``fps``; an image is a video of one frame.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from flamingo_vlm.data.decoding import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, decode_clip, decode_image, first_present
from flamingo_vlm.data.shards import Record, ShardDataset
from flamingo_vlm.data.skips import BadSample
from flamingo_vlm.data.text import IGNORE_INDEX, decode_text, pad_sample, special_token_ids, tokenize_plain
from flamingo_vlm.image_processing import ImageTransform

TEXT_EXTENSIONS = ("txt", "json")


class _CaptionedMediaDataset(ShardDataset):
    """Shared text side of the pair datasets; subclasses decode the media of a record."""

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str | os.PathLike],
        tokenizer: PreTrainedTokenizerBase,
        image_transform: ImageTransform,
        max_length: int = 32,
        seed: int = 0,
        shuffle_buffer: int = 64,
    ) -> None:
        super().__init__(shards, seed=seed, shuffle_buffer=shuffle_buffer)
        if max_length < 3:
            raise ValueError(f"max_length must leave room for <image>, text and <|endofchunk|>, got {max_length}")
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.max_length = max_length
        self.media_id, self.eoc_id = special_token_ids(tokenizer)

    def decode_media(self, record: Record, rng: random.Random) -> torch.Tensor:
        """``(t, c, h, w)`` pixels of the record's media item."""
        raise NotImplementedError

    def decode(self, record: Record, rng: random.Random) -> dict[str, Any]:
        found = first_present(record, TEXT_EXTENSIONS)
        if found is None:
            raise BadSample("missing_text")
        text_ids = tokenize_plain(self.tokenizer, decode_text(found[1], found[0]))[: self.max_length - 2]
        ids = [self.media_id, *text_ids, self.eoc_id]
        sample = pad_sample(ids, [IGNORE_INDEX, *text_ids, self.eoc_id], self.max_length, self.tokenizer.pad_token_id)
        sample["pixel_values"] = self.decode_media(record, rng).unsqueeze(0)  # (n=1, t, c, h, w)
        sample["media_mask"] = torch.ones(1, dtype=torch.bool)  # (n,)
        return sample


class ImageTextDataset(_CaptionedMediaDataset):
    """Records of ``jpg|jpeg|png|webp`` + ``txt|json`` (caption in ``caption``/``text``)."""

    def decode_media(self, record: Record, rng: random.Random) -> torch.Tensor:
        found = first_present(record, IMAGE_EXTENSIONS)
        if found is None:
            raise BadSample("missing_image")
        return self.image_transform(decode_image(found[1])).unsqueeze(0)  # (t=1, c, h, w)


class VideoTextDataset(_CaptionedMediaDataset):
    """Records of ``mp4|webm`` + ``txt|json``; ``num_frames`` frames at ``fps`` (paper: 8 at 1 FPS)."""

    def __init__(self, *args: Any, num_frames: int = 8, fps: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_frames = num_frames
        self.fps = fps

    def decode_media(self, record: Record, rng: random.Random) -> torch.Tensor:
        found = first_present(record, VIDEO_EXTENSIONS)
        if found is None:
            raise BadSample("missing_video")
        frames = decode_clip(found[1], self.num_frames, self.fps, rng)
        return torch.stack([self.image_transform(f) for f in frames])  # (t, c, h, w)
