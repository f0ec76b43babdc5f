"""Video decoding: frames are sampled by timestamp, bytes decode like files, bad input is named."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from flamingo_vlm.video import (  # noqa: E402
    read_video_frames,
    split_time_fragment,
    subsample_evenly,
    with_time_fragment,
    write_video,
)

CLIP_FPS, CLIP_SECONDS, LEVEL = 10, 4, 6


def counter_frames(n: int = CLIP_FPS * CLIP_SECONDS, size: tuple[int, int] = (16, 24)) -> list[np.ndarray]:
    """Frame i is uniformly grey at level i * LEVEL, so a decoded frame tells its own index."""
    return [np.full((*size, 3), i * LEVEL, dtype=np.uint8) for i in range(n)]


def frame_index(image) -> int:
    return round(np.asarray(image, dtype=np.float64).mean() / LEVEL)


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    return write_video(counter_frames(), fps=CLIP_FPS)


def test_samples_one_frame_per_second_by_timestamp(clip_bytes):
    frames = read_video_frames(clip_bytes, fps=1.0)
    assert [frame_index(f) for f in frames] == [0, 10, 20, 30]  # t = 0, 1, 2, 3 s
    assert frames[0].size == (24, 16) and frames[0].mode == "RGB"


def test_fractional_rate_takes_first_frame_at_or_after_each_target(clip_bytes):
    frames = read_video_frames(clip_bytes, fps=3.0)
    # targets k/3 s -> first frames at or after them (frame k at k/10 s)
    assert [frame_index(f) for f in frames] == [0, 4, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37]


def test_rate_above_clip_rate_keeps_every_frame_once(clip_bytes):
    frames = read_video_frames(clip_bytes, fps=100.0)
    assert [frame_index(f) for f in frames] == list(range(CLIP_FPS * CLIP_SECONDS))


def test_max_frames_subsamples_evenly_over_the_clip(clip_bytes):
    frames = read_video_frames(clip_bytes, fps=2.0, max_frames=3)  # 8 sampled: t = 0, 0.5, ..., 3.5
    assert [frame_index(f) for f in frames] == [0, 20, 35]


def test_a_segment_is_sampled_on_the_clip_clock_from_its_start(clip_bytes):
    frames = read_video_frames(clip_bytes, fps=1.0, start=1.5, end=3.5)
    assert [frame_index(f) for f in frames] == [15, 25]  # t = 1.5, 2.5 s; 3.5 s is the (excluded) end
    assert [frame_index(f) for f in read_video_frames(clip_bytes, fps=1.0, start=2.0)] == [20, 30]
    assert [frame_index(f) for f in read_video_frames(clip_bytes, fps=1.0, end=1.0)] == [0]
    with pytest.raises(ValueError, match=r"no video frames between 5 s and 9 s"):
        read_video_frames(clip_bytes, fps=1.0, start=5, end=9)
    with pytest.raises(ValueError, match="must end after it starts"):
        read_video_frames(clip_bytes, fps=1.0, start=3, end=2)


def test_time_fragments_on_paths_round_trip():
    assert split_time_fragment("a/v.mp4") == ("a/v.mp4", None, None)
    assert split_time_fragment("a/v.mp4#t=1.5,3") == ("a/v.mp4", 1.5, 3.0)
    assert split_time_fragment("v.mp4#t=2") == ("v.mp4", 2.0, None)
    assert split_time_fragment("v.mp4#t=,2") == ("v.mp4", None, 2.0)
    for start, end in [(1.5, 3.0), (2.0, None), (None, 2.0), (None, None)]:
        assert split_time_fragment(with_time_fragment("v.mp4", start, end)) == ("v.mp4", start, end)
    for bad in ("v.mp4#t=x,2", "v.mp4#t=3,2", "v.mp4#t=-1,2"):
        with pytest.raises(ValueError, match="bad time range"):
            split_time_fragment(bad)


def test_bytes_and_path_decode_identically(clip_bytes, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip_bytes)
    from_path = read_video_frames(path, fps=1.0)
    from_str = read_video_frames(str(path), fps=1.0)
    from_bytes = read_video_frames(clip_bytes, fps=1.0)
    for a, b, c in zip(from_path, from_str, from_bytes, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))


def test_write_video_to_path(tmp_path):
    path = tmp_path / "short.mp4"
    assert write_video(counter_frames(6), path, fps=2) is None
    assert [frame_index(f) for f in read_video_frames(path, fps=2.0)] == list(range(6))


@pytest.mark.parametrize("data", [b"", b"definitely not a video" * 20], ids=["empty", "garbage"])
def test_undecodable_bytes_raise_value_error_naming_source(data):
    with pytest.raises(ValueError, match=rf"cannot decode video <{len(data)} bytes>"):
        read_video_frames(data)


def test_file_without_video_stream_raises(tmp_path):
    import av

    path = tmp_path / "tone.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(ValueError, match=r"tone\.wav' has no video stream"):
        read_video_frames(path)


def test_missing_file_and_bad_rate():
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        read_video_frames("nowhere.mp4")
    with pytest.raises(ValueError, match="fps must be > 0"):
        read_video_frames(b"x", fps=0)


def test_subsample_evenly_keeps_ends():
    assert subsample_evenly(list(range(10)), 4) == [0, 3, 6, 9]
    assert subsample_evenly(list(range(3)), 8) == [0, 1, 2]
    assert subsample_evenly(list(range(5)), 1) == [0]
