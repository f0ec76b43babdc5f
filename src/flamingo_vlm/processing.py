"""FlamingoProcessor: interleaved text, images and videos → the tensors ``Flamingo`` takes.

A Flamingo prompt is text in which ``<image>`` marks where each image or video stands; the j-th
marker of a row refers to media slot j of that row.  The processor keeps those two in step: it
builds the text (or checks the caller's), tokenizes it, turns each image into a 1-frame video and
each video into at most ``max_frames`` frames, and pads both text and media into one batch.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase

from flamingo_vlm.image_processing import FlamingoImageProcessor, Frame, upright
from flamingo_vlm.io import read_json
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN, add_flamingo_tokens
from flamingo_vlm.video import (
    VIDEO_EXTENSIONS,
    describe_source,
    read_video_frames,
    split_time_fragment,
    subsample_evenly,
)

PROCESSOR_CONFIG_NAME = "processor_config.json"

# One image or video: a picture, a list of frames, a (t, h, w, c) array, or an encoded file.
Media = Frame | Sequence[Frame] | str | os.PathLike | bytes
# One interleaved sample: text pieces and media in reading order.
Interleaved = Sequence[str | Media]


@dataclass
class ProcessorConfig:
    """Everything but the tokenizer; saved as ``processor_config.json``."""

    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    max_frames: int = 8
    video_fps: float = 1.0
    media_token: str = MEDIA_TOKEN
    eoc_token: str = EOC_TOKEN

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(m) for m in self.image_mean)
        self.image_std = tuple(float(s) for s in self.image_std)
        if len(self.image_mean) not in (1, 3) or len(self.image_std) != len(self.image_mean):
            raise ValueError(
                f"image_mean and image_std need 1 or 3 channels each, got {self.image_mean} and {self.image_std}"
            )
        if self.image_size < 1 or self.max_frames < 1 or self.video_fps <= 0:
            raise ValueError(
                f"need image_size >= 1, max_frames >= 1 and video_fps > 0, got "
                f"{self.image_size}, {self.max_frames}, {self.video_fps}"
            )

    @property
    def num_channels(self) -> int:
        return len(self.image_mean)


class FlamingoProcessor:
    """Prepares batches of interleaved text and visual media for ``Flamingo``.

    Each batch item is either an interleaved list (``["<caption>", img, "Output: a cat.<|endofchunk|>",
    video, ...]``, each media inserting ``<image>`` where it stands) or a text already holding
    ``<image>`` markers together with its list of media (``proc(texts, images=[[img, ...], ...])``).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        max_frames: int = 8,
        video_fps: float = 1.0,
        media_token: str = MEDIA_TOKEN,
        eoc_token: str = EOC_TOKEN,
    ) -> None:
        self.config = ProcessorConfig(
            image_size=image_size,
            image_mean=tuple(image_mean),
            image_std=tuple(image_std),
            max_frames=max_frames,
            video_fps=video_fps,
            media_token=media_token,
            eoc_token=eoc_token,
        )
        self.tokenizer = tokenizer
        self.media_token_id, self.eoc_token_id = add_flamingo_tokens(tokenizer, media_token, eoc_token)
        self.image_processor = FlamingoImageProcessor(
            self.config.image_size, self.config.image_mean, self.config.image_std
        )

    # ------------------------------------------------------------------ construction / saving

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> FlamingoProcessor:
        """The processor matching a ``Flamingo`` model: its tokenizer, image geometry and frame budget."""
        kwargs = dict(
            tokenizer=model.tokenizer,
            image_size=model.vision.image_size,
            image_mean=model.vision.image_mean,
            image_std=model.vision.image_std,
            max_frames=model.config.max_frames,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the tokenizer and ``processor_config.json`` (safe next to a model checkpoint)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> FlamingoProcessor:
        path = Path(directory) / PROCESSOR_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: save the processor with save_pretrained, or build it with from_model"
            )
        kwargs = read_json(path)
        kwargs["tokenizer"] = overrides.pop("tokenizer", None) or AutoTokenizer.from_pretrained(directory)
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------ pixels

    def transform_image(self, image: Frame) -> torch.Tensor:
        """One picture → normalised ``(c, image_size, image_size)`` tensor (:class:`FlamingoImageProcessor`)."""
        return self.image_processor(image)

    def load_video(
        self, source: str | os.PathLike | bytes, fps: float | None = None, max_frames: int | None = None
    ) -> list[Image.Image]:
        """Decode a video with this processor's sampling rate and frame budget (overridable).

        A path may end in a media-fragment time range, ``clip.mp4#t=12,30``: only that segment is sampled.
        """
        start = end = None
        if isinstance(source, (str, os.PathLike)):
            source, start, end = split_time_fragment(os.fspath(source))
        return read_video_frames(
            source,
            fps=self.config.video_fps if fps is None else fps,
            max_frames=self.config.max_frames if max_frames is None else max_frames,
            start=start,
            end=end,
        )

    def transform_media(self, media: Media) -> torch.Tensor:
        """An image or video → ``(t, c, h, w)``, an image being a video of one frame."""
        frames = subsample_evenly(self._frames(media), self.config.max_frames)
        return torch.stack([self._transform_frame(f, i, len(frames)) for i, f in enumerate(frames)])  # (t, c, h, w)

    def _transform_frame(self, frame: Frame, index: int, count: int) -> torch.Tensor:
        """:meth:`transform_image`, naming the frame of a video in the error."""
        try:
            return self.transform_image(frame)
        except ValueError as e:
            raise ValueError(f"frame {index} of {count}: {e}" if count > 1 else str(e)) from e

    def _frames(self, media: Media) -> list[Frame]:
        if isinstance(media, Image.Image):
            return [media]
        if isinstance(media, np.ndarray):
            if media.ndim in (2, 3):
                return [media]
            if media.ndim == 4:
                frames = list(media)  # (t, h, w, c)
            else:
                raise ValueError(f"an array must be (h, w[, c]) or (t, h, w, c), got shape {media.shape}")
        elif isinstance(media, (str, os.PathLike, bytes, bytearray)):
            return self._decode(media)
        elif isinstance(media, (list, tuple)):
            frames = list(media)
            bad = [type(f).__name__ for f in frames if not isinstance(f, (Image.Image, np.ndarray))]
            if bad:
                raise ValueError(f"video frames must be PIL images or arrays, got {', '.join(sorted(set(bad)))}")
        else:
            raise ValueError(
                f"unsupported media type {type(media).__name__}: expected a PIL image, a numpy array, "
                "a list of frames, a file path or encoded bytes"
            )
        if not frames:
            raise ValueError("a video has no frames")
        return frames

    def _decode(self, source: str | os.PathLike | bytes) -> list[Image.Image]:
        """An encoded file (path or bytes) → frames: one for an image, sampled frames for a video."""
        name = describe_source(source)
        is_path = isinstance(source, (str, os.PathLike))
        if is_path and Path(split_time_fragment(os.fspath(source))[0]).suffix.lower() in VIDEO_EXTENSIONS:
            return self.load_video(source)
        if is_path and not os.path.isfile(source):
            raise FileNotFoundError(f"media file not found: {name}")
        try:
            with Image.open(source if is_path else io.BytesIO(bytes(source))) as image:
                return [upright(image)]  # a decoded copy, made while the file is still open
        except Image.DecompressionBombError as e:
            raise ValueError(f"{name} is too large to decode: {e}") from e
        except (UnidentifiedImageError, OSError) as image_error:
            # Not a picture PIL knows: it may still be a video without a telling extension.
            try:
                return self.load_video(source)
            except (ValueError, ImportError):
                raise ValueError(f"cannot decode {name} as an image or a video: {image_error}") from image_error

    # ------------------------------------------------------------------ batching

    def __call__(
        self,
        inputs: str | Interleaved | Sequence[str] | Sequence[Interleaved],
        images: Sequence[Media | Sequence[Media]] | None = None,
        padding_side: Literal["left", "right"] = "left",
        padding: Literal["longest", "max_length"] = "longest",
        max_length: int | None = None,
    ) -> BatchFeature:
        """Tokenize and pad a batch; ``padding_side="left"`` for generation, ``"right"`` for training.

        Returns ``input_ids (b, L)``, ``attention_mask (b, L)``, ``pixel_values (b, n, t, c, h, w)``
        float32 and ``media_mask (b, n)`` bool, where ``n`` is the most media of any row and ``t``
        the most frames of any media.  A batch without media still gets tensors, with ``n = 0``
        and ``t = 1``, so the model's call never branches on ``None``.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if padding not in ("longest", "max_length") or (padding == "max_length" and max_length is None):
            raise ValueError(f"padding must be 'longest' or 'max_length' (with max_length), got {padding!r}")
        texts, media = self._split(inputs, images)
        for i, (text, row_media) in enumerate(zip(texts, media)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate: the tokenizer would fail with a TypeError
                raise ValueError(f"item {i}: the text is not valid Unicode: {e}") from e
            n_markers = text.count(self.config.media_token)
            if n_markers != len(row_media):
                raise ValueError(
                    f"item {i}: its text has {n_markers} {self.config.media_token} marker(s) "
                    f"but {len(row_media)} media were given"
                )
        pixels = [[self._transform_at(m, i, j) for j, m in enumerate(row)] for i, row in enumerate(media)]
        input_ids, attention_mask = self._tokenize(texts, padding_side, padding, max_length)
        pixel_values, media_mask = self._stack_media(pixels)
        return BatchFeature(
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "pixel_values": pixel_values,
                "media_mask": media_mask,
            }
        )

    def _split(self, inputs: Any, images: Any) -> tuple[list[str], list[list[Media]]]:
        """Normalise every accepted input form to (one text per row, its media in marker order)."""
        if isinstance(inputs, str):
            return self._split([inputs], None if images is None else [images])
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise ValueError(f"expected a text, an interleaved list or a non-empty batch of them, got {inputs!r:.80}")
        if images is not None or all(isinstance(x, str) and not _is_media_path(x) for x in inputs):
            if not all(isinstance(x, str) for x in inputs):
                raise ValueError("images= goes with texts holding markers; interleaved lists carry their own media")
            if images is None:
                images = [[] for _ in inputs]
            if len(images) != len(inputs):
                raise ValueError(f"got {len(inputs)} texts but images for {len(images)} items")
            media = [list(row) if isinstance(row, (list, tuple)) else [row] for row in images]
            return list(inputs), media
        if not all(isinstance(x, (list, tuple)) for x in inputs):  # one interleaved item
            inputs = [inputs]
        texts, media = [], []
        for item in inputs:
            pieces, row_media = [], []
            for x in item:
                if isinstance(x, str) and not _is_media_path(x):
                    pieces.append(x)
                else:
                    pieces.append(self.config.media_token)
                    row_media.append(x)
            texts.append("".join(pieces))
            media.append(row_media)
        return texts, media

    def _transform_at(self, media: Media, row: int, slot: int) -> torch.Tensor:
        try:
            return self.transform_media(media)  # (t, c, h, w)
        except ValueError as e:
            raise ValueError(f"item {row}, media {slot}: {e}") from e

    def _tokenize(
        self, texts: list[str], padding_side: str, padding: str, max_length: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.tokenizer(texts, padding=False, truncation=False)["input_ids"]
        for i, (text, ids) in enumerate(zip(texts, rows)):
            if max_length is not None and len(ids) > max_length:
                # Truncation could cut <image> tokens away from their media: the caller must decide.
                raise ValueError(f"item {i} is {len(ids)} tokens long, more than max_length={max_length}")
            if ids.count(self.media_token_id) != text.count(self.config.media_token):
                raise ValueError(f"item {i}: the tokenizer did not keep every {self.config.media_token} as one token")
        width = max_length if padding == "max_length" else max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)  # (b, L)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (b, L)
        for i, ids in enumerate(rows):
            span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
            input_ids[i, span] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, span] = 1
        return input_ids, attention_mask

    def _stack_media(self, pixels: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad media slots with zeros and frames by repeating each media's last frame.

        The model has no frame mask: every frame slot is encoded, resampled and attended to.
        Repeating the last frame keeps a short video a plausible video and leaves a 1-frame image
        exactly that image, whereas zero frames would be attended to as black frames.
        """
        size, channels = self.config.image_size, self.config.num_channels
        n_media = max(len(row) for row in pixels)
        n_frames = max((m.shape[0] for row in pixels for m in row), default=1)
        pixel_values = torch.zeros(len(pixels), n_media, n_frames, channels, size, size)  # (b, n, t, c, h, w)
        media_mask = torch.zeros(len(pixels), n_media, dtype=torch.bool)  # (b, n)
        for i, row in enumerate(pixels):
            for j, frames in enumerate(row):  # (t_j, c, h, w)
                pixel_values[i, j, : frames.shape[0]] = frames
                pixel_values[i, j, frames.shape[0] :] = frames[-1]
                media_mask[i, j] = True
        return pixel_values, media_mask

    # ------------------------------------------------------------------ decoding / scoring

    def batch_decode(
        self,
        sequences: torch.Tensor | Sequence[Sequence[int]],
        prompt_length: int | None = None,
        skip_special_tokens: bool = True,
        stop_labels: Sequence[str] | None = None,
        **decode_kwargs: Any,
    ) -> list[str]:
        """Decode generated rows; with ``prompt_length``, only the new text after the padded prompt.

        ``generate`` returns prompt + new tokens, so ``prompt_length`` is ``input_ids.shape[1]``.
        The new text ends at the first ``<|endofchunk|>`` or EOS: what follows is padding of
        finished beams, never part of the answer.  Without ``prompt_length`` whole rows are decoded.

        With ``stop_labels`` (the prompt's field labels, :func:`field_labels`; even none) each text is
        also cut where the model went on to write the next field or line (:func:`cut_answer`): the
        answer alone.  ``decode_kwargs`` go to the tokenizer's ``decode``.
        """
        return [self.decode(row, prompt_length, skip_special_tokens, stop_labels, **decode_kwargs) for row in sequences]

    def decode(
        self,
        sequence: torch.Tensor | Sequence[int],
        prompt_length: int | None = None,
        skip_special_tokens: bool = True,
        stop_labels: Sequence[str] | None = None,
        **decode_kwargs: Any,
    ) -> str:
        """One row of :meth:`batch_decode`, stripped of surrounding whitespace."""
        ids = sequence.tolist() if isinstance(sequence, torch.Tensor) else list(sequence)
        if prompt_length is not None:
            ids = ids[prompt_length:]
            stops = {self.eoc_token_id, self.tokenizer.eos_token_id} - {None}
            end = next((k for k, token in enumerate(ids) if token in stops), len(ids))
            ids = ids[:end]
        text = self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **decode_kwargs).strip()
        return text if stop_labels is None else cut_answer(text, stop_labels)

    def tokenize_candidates(self, candidates: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Token ids of each row's candidate continuations, for ``Flamingo.score``.

        No special tokens are added: a candidate continues the prompt, it does not start a text.
        Write the separator the prompt expects (usually a leading space) into the candidate.
        """
        out = []
        for i, row in enumerate(candidates):
            ids = self.tokenizer(list(row), add_special_tokens=False)["input_ids"] if row else []
            empty = [c for c, tokens in zip(row, ids) if not tokens]
            if empty:
                raise ValueError(f"row {i}: candidates {empty!r} tokenize to nothing")
            out.append(ids)
        return out


def field_labels(text: str) -> tuple[str, ...]:
    """The field labels of a template or prompt (``"Question:"``, ``"Answer:"``), in order of first use.

    A model trained on pages that ask several questions per image may write the next ``Question:``
    instead of ``<|endofchunk|>`` after its answer; OpenFlamingo's VQA post-processing cuts there too
    (``re.split("Question|Answer|Short", ...)``).
    """
    return tuple(dict.fromkeys(re.findall(r"[A-Za-z]+:", text)))


def cut_answer(generated: str, labels: Sequence[str]) -> str:
    """A generated continuation up to the first of ``labels`` or line break: the answer alone.

    A label's word that ends the generation after an answer also counts without its colon:
    ``max_new_tokens`` can run out between the two (``"left Question"``).  Only there, so that an
    answer merely containing the word (``"A red circle"``, or ``"A"`` alone, under a ``Q: … A:``
    template) is kept.  Generation should still stop at the whole label only: a beam that stops at
    the bare word outscores longer, right answers.
    """
    ends = [re.escape(label) for label in labels]
    ends += [rf"(?<=\S)\s+{re.escape(label.rstrip(':'))}\s*$" for label in labels] + ["\n"]
    return re.split("|".join(ends), generated, maxsplit=1)[0].strip()


def _is_media_path(text: str) -> bool:
    """Whether a string inside an interleaved list names an existing image or video file.

    Only strings with a picture or video extension that exist on disk count, so ordinary text —
    even text that happens to be a file name of something else — stays text.
    """
    if "\n" in text or len(text) > 4096:
        return False
    suffix = os.path.splitext(text)[1].lower()
    known = suffix in VIDEO_EXTENSIONS or suffix in Image.registered_extensions()
    return known and os.path.isfile(text)
