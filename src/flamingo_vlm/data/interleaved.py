"""The interleaved sampler: the training view of a web document (the paper's M3W recipe).

A document becomes ``text <|endofchunk|><image> text ... <|endofchunk|>``: ``<image>`` where an
image stands, ``<|endofchunk|>`` closing the chunk before every image and at the end.  With
probability ``p_next`` per page the text is instead tied to the *next* image: each image's
``<image>`` token moves before the text that precedes it in the page, so that the model's
"attend to the last preceding image" rule makes that text see the following image (text after
the last image has no next image and is dropped).  A random window of ``max_length`` tokens
containing at least one image is kept, cut before its ``max_images + 1``-th image.  The loss
covers text after the window's first image; ``<image>`` tokens and padding are masked.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from flamingo_vlm.data.decoding import decode_image
from flamingo_vlm.data.document import Document, TextItem
from flamingo_vlm.data.shards import Record, ShardDataset
from flamingo_vlm.data.skips import BadSample
from flamingo_vlm.data.text import IGNORE_INDEX, pad_sample, special_token_ids, tokenize_plain
from flamingo_vlm.image_processing import ImageTransform
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN


@dataclass
class InterleavedConfig:
    max_length: int = 256  # L
    max_images: int = 5  # N
    p_next: float = 0.5
    max_images_per_document: int = 100  # pages with more are skipped (galleries, spam)


def chunks(document: Document, tie_next: bool = False) -> list[tuple[int | None, list[str]]]:
    """The document as ``(image index, texts)`` chunks, in token order; ``None`` for the leading text.

    With ``tie_next`` each image takes the text *before* it (text after the last image is dropped).
    """
    out: list[tuple[int | None, list[str]]]
    texts: list[str] = []
    if tie_next:
        out = []
        for item in document.items:
            if isinstance(item, TextItem):
                texts.append(item.text)
            else:
                out.append((len(out), texts))
                texts = []
    else:
        out = [(None, texts)]
        for item in document.items:
            if isinstance(item, TextItem):
                out[-1][1].append(item.text)
            else:
                out.append((len(out) - 1, []))
    return out


def interleave(
    document: Document,
    tokenizer: PreTrainedTokenizerBase,
    tie_next: bool = False,
) -> tuple[list[int], list[int]]:
    """Token ids of a whole document, and for each ``<image>`` token (in order) its image's index.

    Text items of one chunk are joined with a space and tokenized together; special-token strings
    inside page text stay plain text.
    """
    media_id, eoc_id = special_token_ids(tokenizer)
    ids: list[int] = []
    image_order: list[int] = []
    for image, chunk_texts in chunks(document, tie_next):
        if image is not None:
            if ids:
                ids.append(eoc_id)  # close the previous chunk
            ids.append(media_id)
            image_order.append(image)
        if chunk_texts:
            ids.extend(tokenize_plain(tokenizer, " ".join(chunk_texts)))
    ids.append(eoc_id)
    return ids, image_order


def document_text(document: Document, media_token: str = MEDIA_TOKEN, eoc_token: str = EOC_TOKEN) -> str:
    """The document as one string laid out like :func:`interleave` (``tie_next=False``).

    For pretraining an LM on the text Flamingo will later show it: tokenised with the two markers
    as special tokens, it gives the same ids as ``interleave`` (page text without marker strings).
    """
    out = ""
    for image, chunk_texts in chunks(document):
        if image is not None:
            out += (eoc_token if out else "") + media_token
        out += " ".join(chunk_texts)
    return out + eoc_token


def sample_window(is_media: np.ndarray, max_length: int, max_images: int, rng: random.Random) -> tuple[int, int]:
    """``[start, end)`` of a random window of at most ``max_length`` tokens holding 1..max_images images.

    The start is uniform over all windows that contain an image; the window is then cut right before
    its ``max_images + 1``-th image (the ``<|endofchunk|>`` closing the last kept chunk stays).
    """
    n = len(is_media)
    media_positions = np.flatnonzero(is_media)
    if len(media_positions) == 0:
        raise BadSample("no_images")
    counts = np.concatenate([[0], np.cumsum(is_media)])  # (n + 1,)
    starts = np.arange(max(n - max_length, 0) + 1)
    ends = np.minimum(starts + max_length, n)
    valid = np.flatnonzero(counts[ends] - counts[starts] > 0)
    start = int(valid[rng.randrange(len(valid))])
    end = min(start + max_length, n)
    later = media_positions[media_positions >= start]
    if len(later) > max_images:
        end = min(end, int(later[max_images]))
    return start, end


class InterleavedDataset(ShardDataset):
    """Web documents from shards written by ``flamingo data build-web`` (``json`` + image files)."""

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str | os.PathLike],
        tokenizer: PreTrainedTokenizerBase,
        image_transform: ImageTransform,
        config: InterleavedConfig | None = None,
        seed: int = 0,
        shuffle_buffer: int = 64,
    ) -> None:
        super().__init__(shards, seed=seed, shuffle_buffer=shuffle_buffer)
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.config = config or InterleavedConfig()
        self.media_id, self.eoc_id = special_token_ids(tokenizer)

    def decode(self, record: Record, rng: random.Random) -> dict[str, Any]:
        cfg = self.config
        if "json" not in record:
            raise BadSample("missing_document")
        document = Document.from_json(record["json"])
        if not any(t.text.strip() for t in document.texts):
            raise BadSample("no_text")
        images = document.images
        if not images:
            raise BadSample("no_images")
        if len(images) > cfg.max_images_per_document:
            raise BadSample("too_many_images", f"{len(images)} > {cfg.max_images_per_document}")

        ids, image_order = interleave(document, self.tokenizer, tie_next=rng.random() < cfg.p_next)
        is_media = np.asarray(ids) == self.media_id
        start, end = sample_window(is_media, cfg.max_length, cfg.max_images, rng)
        first_image = int(is_media[:start].sum())
        window_images = image_order[first_image : first_image + int(is_media[start:end].sum())]

        pixels = []
        for index in window_images:
            data = record.get(images[index].src.lower())
            if data is None:
                raise BadSample("missing_image", images[index].src)
            pixels.append(self.image_transform(decode_image(data)))  # (c, h, w)

        window = ids[start:end]
        media_in_window = is_media[start:end]
        first = int(np.argmax(media_in_window))
        labels = [IGNORE_INDEX if (i < first or media_in_window[i]) else t for i, t in enumerate(window)]
        sample = pad_sample(window, labels, cfg.max_length, self.tokenizer.pad_token_id)
        sample["pixel_values"] = torch.stack(pixels).unsqueeze(1)  # (n, t=1, c, h, w)
        sample["media_mask"] = torch.ones(len(pixels), dtype=torch.bool)  # (n,)
        return sample
