"""Video decoding (and encoding) with PyAV: the one place in the package that touches codecs.

Flamingo treats a video as a short sequence of frames sampled at a fixed rate (the paper samples
1 frame per second) and an image as a video of one frame.  Everything that reads videos — the
processor, the data pipeline on bytes from WebDataset shards, the evaluation tasks — goes through
:func:`read_video_frames`, so that training and evaluation see frames chosen the same way.

PyAV is an optional dependency (``pip install "flamingo-vlm[video]"``); it is imported inside the
functions so that image-only users never need it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import TypeVar

import numpy as np
from PIL import Image

T = TypeVar("T")

# Extensions treated as video files when a path string appears among text (see FlamingoProcessor).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp", ".ogv"}
)

# Timestamps are exact fractions, but targets k / fps are floats: absorb their rounding.
_TIME_TOLERANCE = 1e-6


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - exercised only without the extra installed
        raise ImportError('video support needs PyAV: pip install "flamingo-vlm[video]"') from e
    return av


def describe_source(source: str | os.PathLike | bytes) -> str:
    """A short human-readable name for an encoded media source, for error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return repr(os.fspath(source))


def subsample_evenly(items: Sequence[T], max_items: int | None) -> list[T]:
    """At most ``max_items`` of ``items``, evenly spread and always keeping the first and the last.

    Used for both decoded clips and frame lists given directly, so that a long video keeps its
    whole time span rather than only its beginning.
    """
    items = list(items)
    if max_items is None or len(items) <= max_items:
        return items
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    index = np.linspace(0, len(items) - 1, max_items).round().astype(int)
    return [items[i] for i in index]


def split_time_fragment(path: str) -> tuple[str, float | None, float | None]:
    """``"clip.mp4#t=12.5,30"`` → ``("clip.mp4", 12.5, 30.0)``: a W3C media-fragment time range on a path.

    Video benchmarks annotate a segment of a longer video (YouCook2, iVQA, STAR, RareAct); the segment
    travels with the path, so every reader of media files (evaluation, RICES) cuts the same clip. ``#t=a``
    means from ``a`` to the end, ``#t=,b`` from the start to ``b``. Paths without ``#t=`` are returned whole.
    """
    base, sep, fragment = path.rpartition("#t=")
    if not sep:
        return path, None, None
    try:
        start_text, _, end_text = fragment.partition(",")
        start = float(start_text) if start_text else None
        end = float(end_text) if end_text else None
    except ValueError:
        raise ValueError(f"bad time range {fragment!r} in {path!r}: expected #t=START,END in seconds") from None
    if (start is not None and start < 0) or (start is not None and end is not None and end <= start):
        raise ValueError(f"bad time range {fragment!r} in {path!r}: need 0 <= START < END")
    return base, start, end


def with_time_fragment(path: str, start: float | None, end: float | None) -> str:
    """The inverse of :func:`split_time_fragment` (a path alone when neither bound is given)."""
    if start is None and end is None:
        return path
    return f"{path}#t={'' if start is None else f'{start:g}'},{'' if end is None else f'{end:g}'}"


def read_video_frames(
    source: str | os.PathLike | bytes,
    fps: float = 1.0,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> list[Image.Image]:
    """Decode a video and return RGB frames sampled ``fps`` times per second of clip time.

    Frames are chosen by their presentation timestamps (``pts * time_base``), measured from the
    first frame: for each target time ``k / fps`` the first frame at or after it is kept, so a 4 s
    clip at any frame rate gives the frames at t ≈ 0, 1, 2, 3 s for ``fps=1``.  Variable-frame-rate
    clips are therefore sampled in real time, not by frame count.  When more than ``max_frames``
    frames are sampled, they are subsampled evenly over the clip.  ``start``/``end`` (seconds, same
    clock) cut an annotated segment: targets run ``start, start + 1/fps, …`` while before ``end``.

    ``source`` is a path or the encoded file itself as ``bytes`` (e.g. read from a WebDataset
    shard); bytes are decoded in memory.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: the data cannot be decoded, or holds no video stream or no video frames.
    """
    av = _import_av()
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    name = describe_source(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        file = io.BytesIO(bytes(source))
    else:
        file = os.fspath(source)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"video file not found: {name}")

    if start is not None and end is not None and end <= start:
        raise ValueError(f"{name}: the clip must end after it starts, got {start}..{end} s")
    frames: list[Image.Image] = []
    try:
        with av.open(file, mode="r") as container:
            if not container.streams.video:
                raise ValueError(f"{name} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frame_rate = stream.average_rate or stream.guessed_rate or Fraction(1)
            first, next_target = None, start or 0.0
            for index, frame in enumerate(container.decode(stream)):
                # Frames without a pts (rare raw streams) fall back to their index at the nominal rate.
                time = float(frame.pts * stream.time_base) if frame.pts is not None else float(index / frame_rate)
                first = time if first is None else first
                t = time - first
                if end is not None and t >= end - _TIME_TOLERANCE:
                    break
                if t + _TIME_TOLERANCE < next_target:
                    continue
                frames.append(frame.to_image())
                # Skip every target this frame already covers: a sparse clip never repeats frames.
                while next_target <= t + _TIME_TOLERANCE:
                    next_target += 1.0 / fps
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode video {name}: {e}") from e
    if not frames:
        where = "" if start is None and end is None else f" between {start or 0:g} s and {end if end else 'the end'} s"
        raise ValueError(f"{name} has no video frames{where}")
    return subsample_evenly(frames, max_frames)


def write_video(
    frames: Sequence[Image.Image | np.ndarray],
    destination: str | os.PathLike | None = None,
    fps: float = 1.0,
    codec: str = "mpeg4",
    container_format: str = "mp4",
) -> bytes | None:
    """Encode RGB frames (PIL images or ``(h, w, 3)`` uint8 arrays) as a video.

    Writes to ``destination`` when given (its extension picks the container), otherwise returns the
    encoded file as ``bytes`` — the form that goes straight into a WebDataset shard.  ``mpeg4``
    is the default codec because every FFmpeg build ships its encoder.
    """
    av = _import_av()
    if not frames:
        raise ValueError("cannot write a video with no frames")
    arrays = [np.asarray(f.convert("RGB") if isinstance(f, Image.Image) else f, dtype=np.uint8) for f in frames]
    height, width = arrays[0].shape[:2]
    if any(a.shape != (height, width, 3) for a in arrays):
        raise ValueError(f"all frames must be RGB of the first frame's size {(height, width, 3)}")
    buffer = None if destination is not None else io.BytesIO()
    target = os.fspath(destination) if destination is not None else buffer
    fmt = None if destination is not None else container_format
    with av.open(target, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for array in arrays:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return None if buffer is None else buffer.getvalue()
