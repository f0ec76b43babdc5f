"""Decoding images and videos from record bytes, all-or-nothing.

Pillow decodes lazily: ``Image.open`` only reads the header, so a truncated file would pass and
fail later, mid-batch, or be silently padded.  Images are therefore fully loaded here, and any
failure becomes a :class:`BadSample` — a sample is never built from a half-decoded image.
"""

from __future__ import annotations

import io
import random
import warnings

from PIL import Image

from flamingo_vlm.data.skips import BadSample
from flamingo_vlm.image_processing import convert_mode, upright
from flamingo_vlm.video import read_video_frames

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
VIDEO_EXTENSIONS = ("mp4", "webm")


def decode_image(data: bytes) -> Image.Image:
    """Fully decode image bytes to upright RGB; raises ``BadSample("undecodable_image")``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
            return convert_mode(upright(image), "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadSample("undecodable_image", str(e)) from e


def decode_clip(data: bytes, num_frames: int, fps: float, rng: random.Random) -> list[Image.Image]:
    """``num_frames`` consecutive frames sampled at ``fps`` from a random start in the video.

    A clip shorter than ``num_frames`` seconds is stretched (each frame repeated in order), so that
    every video of a batch has the same number of frames and the temporal embeddings see the
    whole clip; raises ``BadSample("undecodable_video")``.
    """
    try:
        frames = read_video_frames(data, fps=fps)
    except ValueError as e:
        raise BadSample("undecodable_video", str(e)) from e
    if len(frames) >= num_frames:
        start = rng.randrange(len(frames) - num_frames + 1)
        return frames[start : start + num_frames]
    return [frames[i * len(frames) // num_frames] for i in range(num_frames)]


def first_present(record: dict, extensions: tuple[str, ...]) -> tuple[str, bytes] | None:
    """The first of ``extensions`` present in a record, with its bytes."""
    for extension in extensions:
        if extension in record:
            return extension, record[extension]
    return None
