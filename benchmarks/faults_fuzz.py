"""Fuzz campaign: seeded broken records through every input path of the package.

Each case writes a few *good* records next to one broken one (a truncated or bit-flipped picture, a
decompression bomb, malformed or 10^5-deep HTML, a truncated tar shard, a video without frames,
an annotation file with missing fields, a tensor of the wrong dtype...) and feeds them through one
real input path: ``flamingo data build-web``, the three shard datasets, ``FlamingoProcessor``, the
``flamingo eval`` task readers, ``flamingo generate`` and the model API. Every good record carries a
marker word, so the case can count which good records came out (and, for pictures, that they came
out upright and at the right brightness); the broken one must end as a counted skip or a
``ValueError`` naming the problem. Cases cycle through the fault kinds of their path, so even the
small slice the test suite runs touches every kind of every path that it has cases for.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import tarfile
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from faults_common import TINY_FLAMINGO, Outcome, Row, run_case, write_tiny_parts
from PIL import Image

from flamingo_vlm import Flamingo, FlamingoProcessor
from flamingo_vlm.cli import main as flamingo_main
from flamingo_vlm.data import ImageTextDataset, InterleavedConfig, InterleavedDataset, Slot, VideoTextDataset
from flamingo_vlm.data.build import build_web_shards
from flamingo_vlm.data.shards import read_shard
from flamingo_vlm.data.skips import SkipCounts
from flamingo_vlm.evaluate.tasks import TASKS

CAMPAIGN = "fuzz"
SIZE = 32  # the tiny vision encoder's input side
WORDS = "a red square is above the blue circle and two green stars move left of a grey triangle".split()
TIMEOUT = 30.0  # seconds per case: generous on a loaded 2-core machine, still a hang detector
PIXEL_TOLERANCE = 0.1  # mean |difference| in [0, 1] pixel units between a good picture and its reference


# ---------------------------------------------------------------------------------------------- pictures


def _smooth(rng: random.Random, width: int, height: int) -> np.ndarray:
    """An RGB picture that survives JPEG: two gradients and a block, (h, w, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width]
    a, b, c = (rng.randrange(40, 215) for _ in range(3))
    image = np.stack([a + 40 * x / width, b + 40 * y / height, np.full_like(x, c, dtype=float)], axis=-1)
    image[: height // 2, : width // 3] = (230, 30, 30)  # top-left block: orientation shows
    return image.clip(0, 255).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width × height`` greyscale pixels, with a few rows of data only."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _flip_bits(data: bytes, rng: random.Random, flips: int = 8) -> bytes:
    out = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


# kind → (bytes, extension, reference RGB picture for a good one / None for a broken one)
Picture = tuple[bytes, str, Image.Image | None]


def make_picture(kind: str, rng: random.Random, size: tuple[int, int] = (96, 72)) -> Picture:
    """One seeded picture of ``kind``; good kinds come with the upright 8-bit RGB picture they must decode to."""
    w, h = size
    rgb = Image.fromarray(_smooth(rng, w, h))
    if kind == "jpeg":
        return _encode(rgb, "JPEG", quality=95), "jpg", rgb
    if kind == "png":
        return _encode(rgb, "PNG"), "png", rgb
    if kind == "webp":
        return _encode(rgb, "WEBP", quality=95), "webp", rgb
    if kind == "cmyk_jpeg":
        cmyk = rgb.convert("CMYK")
        return _encode(cmyk, "JPEG", quality=95), "jpg", cmyk.convert("RGB")
    if kind == "grey_jpeg":
        return _encode(rgb.convert("L"), "JPEG", quality=95), "jpg", rgb.convert("L").convert("RGB")
    if kind == "palette_png":
        palette = rgb.quantize(16)
        return _encode(palette, "PNG", transparency=0), "png", palette.convert("RGB")
    if kind == "rgba_png":
        rgba = rgb.copy()
        rgba.putalpha(Image.fromarray(np.full((h, w), 128, np.uint8)))
        return _encode(rgba, "PNG"), "png", rgb
    if kind == "png16":  # 16-bit greyscale: must come out at its brightness, not clipped to white
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        return _encode(Image.fromarray(grey), "PNG"), "png", rgb.convert("L").convert("RGB")
    if kind == "exif_rotated_jpeg":  # stored sideways, EXIF orientation 6 (rotate 90° clockwise to view)
        stored = rgb.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        return _encode(stored, "JPEG", quality=95, exif=exif), "jpg", rgb
    if kind == "animated_gif":  # the first frame is the picture
        frames = [rgb.quantize(64), Image.fromarray(255 - np.asarray(rgb)).quantize(64)]
        data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        return data, "gif", frames[0].convert("RGB")
    if kind == "animated_webp":
        frames = [rgb, Image.fromarray(255 - np.asarray(rgb))]
        return _encode(rgb, "WEBP", save_all=True, append_images=frames[1:], lossless=True), "webp", rgb
    if kind == "one_pixel_png":
        one = Image.new("RGB", (1, 1), tuple(rng.randrange(256) for _ in range(3)))
        return _encode(one, "PNG"), "png", one
    broken = {
        "truncated_jpeg": lambda: (lambda d: d[: rng.randrange(20, len(d) - 20)])(_encode(rgb, "JPEG")),
        "truncated_png": lambda: (lambda d: d[: rng.randrange(20, len(d) - 20)])(_encode(rgb, "PNG")),
        "truncated_webp": lambda: (lambda d: d[: rng.randrange(20, len(d) - 20)])(_encode(rgb, "WEBP")),
        "bitflip_jpeg": lambda: _flip_bits(_encode(rgb, "JPEG"), rng),
        "bitflip_png": lambda: _flip_bits(_encode(rgb, "PNG"), rng),
        "bitflip_webp": lambda: _flip_bits(_encode(rgb, "WEBP"), rng),
        "zero_byte": lambda: b"",
        "random_bytes": lambda: rng.randbytes(rng.randrange(1, 4096)),
        "bomb_png": lambda: _bomb_png(30_000, 30_000),  # 9e8 pixels: past twice Pillow's limit (an error)
        "bomb_warning_png": lambda: _bomb_png(10_000, 10_000),  # 1e8: past the limit, under twice (a warning)
    }
    extension = next((e for suffix, e in (("jpeg", "jpg"), ("webp", "webp")) if kind.endswith(suffix)), "png")
    return broken[kind](), extension, None


GOOD_PICTURES = (
    "jpeg",
    "png",
    "webp",
    "cmyk_jpeg",
    "grey_jpeg",
    "palette_png",
    "rgba_png",
    "png16",
    "exif_rotated_jpeg",
    "animated_gif",
    "animated_webp",
    "one_pixel_png",
)
BROKEN_PICTURES = (
    "truncated_jpeg",
    "truncated_png",
    "truncated_webp",
    "bitflip_jpeg",
    "bitflip_png",
    "bitflip_webp",
    "zero_byte",
    "random_bytes",
    "bomb_png",
    "bomb_warning_png",
)
# A bit flip may land where no decoder can notice (pixel data): such a picture may come out, or not.
MAYBE_DECODABLE = frozenset({"bitflip_jpeg", "bitflip_png", "bitflip_webp", "truncated_jpeg"})


def reference_pixels(reference: Image.Image, processor: FlamingoProcessor) -> torch.Tensor:
    """What a good picture must become: ``(c, h, w)`` through the same transform, unnormalised to [0, 1]."""
    return processor.transform_image(reference) * 0.5 + 0.5  # the tiny encoder's mean and std are 0.5


def matches(pixels: torch.Tensor, reference: Image.Image, processor: FlamingoProcessor) -> bool:
    """Whether ``(c, h, w)`` normalised pixels show ``reference`` (upright, right brightness)."""
    return float((pixels * 0.5 + 0.5 - reference_pixels(reference, processor)).abs().mean()) < PIXEL_TOLERANCE


# ---------------------------------------------------------------------------------------------- videos


def _encode_video(frames: list[np.ndarray], pts: list[int] | None = None, rate: int = 4) -> bytes:
    """An mpeg4/mp4 clip; ``pts`` in 1/1000 s makes the frame rate variable."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def make_video(kind: str, rng: random.Random) -> tuple[bytes, bool]:
    """Seeded video bytes of ``kind`` and whether it is a good clip."""
    frames = [_smooth(rng, 32, 32) for _ in range(4)]
    if kind == "video":
        return _encode_video(frames), True
    if kind == "one_frame":
        return _encode_video(frames[:1]), True
    if kind == "variable_frame_rate":
        return _encode_video(frames, pts=[0, 40, 900, 2500]), True
    if kind == "no_frames":
        return _encode_video([]), False
    if kind == "unsupported_codec":  # a real container whose stream names a codec FFmpeg has no decoder for
        return _encode_video(frames).replace(b"mp4v", b"zzzz"), False
    if kind == "truncated_video":
        data = _encode_video(frames)
        return data[: rng.randrange(16, len(data) - 16)], False
    if kind == "bitflip_video":
        return _flip_bits(_encode_video(frames), rng), False
    if kind == "zero_byte_video":
        return b"", False
    if kind == "random_bytes_video":
        return rng.randbytes(rng.randrange(1, 4096)), False
    raise KeyError(kind)


GOOD_VIDEOS = ("video", "one_frame", "variable_frame_rate")
BROKEN_VIDEOS = (
    "no_frames",
    "unsupported_codec",
    "truncated_video",
    "bitflip_video",
    "zero_byte_video",
    "random_bytes_video",
)


# ---------------------------------------------------------------------------------------------- shards


def marker(i: int) -> str:
    """The word that identifies good record ``i`` in what comes out (letters only: one BPE-safe word)."""
    return "good" + "".join("abcdefghij"[int(d)] for d in str(i)) + "x"


def _text(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> list[tarfile.TarInfo]:
    """A tar file of ``(name, bytes)`` members in order (odd names allowed); returns the members."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        return tar.getmembers()


def truncate_inside(path: Path, members: list[tarfile.TarInfo], index: int) -> None:
    """Cut the tar file in the middle of member ``index``'s data."""
    member = members[index]
    cut = member.offset_data + max(member.size // 2, 1)
    with open(path, "r+b") as f:
        f.truncate(cut)


def first_epoch(dataset, tokenizer) -> tuple[list[str], Counter]:
    """The decoded text of every sample of epoch 0, and the skips counted by reason (all of epoch 0)."""
    texts, skips = [], Counter()
    for sample in dataset.samples(Slot()):
        skips.update(sample["__skipped__"])
        if sample["__position__"].epoch > 0:
            break
        texts.append(tokenizer.decode(sample["input_ids"][sample["attention_mask"].bool()]))
    return texts, skips


def count_markers(texts: list[str], markers: list[str]) -> int:
    return sum(any(m in t for t in texts) for m in markers)


class Assets:
    """What every case reuses, built once in the parent before the forks: tokenizer, tiny model, processor."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        torch.manual_seed(seed)
        texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4
        write_tiny_parts(workdir, texts, vocab_size=300, max_positions=512)
        model = Flamingo.from_components(
            str(workdir / "lm"),
            str(workdir / "vision"),
            **TINY_FLAMINGO,
            max_frames=4,
        )
        self.model_dir = workdir / "flamingo"
        model.save_pretrained(self.model_dir, full=True)
        self.model = model.eval()
        self.processor = FlamingoProcessor.from_model(model)
        self.tokenizer = self.processor.tokenizer  # with <image> and <|endofchunk|>


# ---------------------------------------------------------------------------------------------- the paths

Case = Callable[[], Outcome]


def _skips(counts: Counter | SkipCounts) -> Counter:
    return Counter({k: v for k, v in counts.items() if v})


def _picture_kinds() -> list[str]:
    return [*GOOD_PICTURES, *BROKEN_PICTURES]


def _shard_kinds() -> list[str]:
    return ["truncated_shard", "zero_byte_shard", "random_bytes_shard", "duplicate_keys", "odd_member_names"]


def pair_case(kind: str, rng: random.Random, assets: Assets, workdir: Path) -> Case:
    """ImageTextDataset: good pairs, one broken pair (picture, text or shard fault), good pairs after it."""

    def case() -> Outcome:
        good: list[tuple[str, bytes, str]] = []  # (key, picture, marker)
        members: list[tuple[str, bytes]] = []
        expected_pixels: dict[str, Image.Image] = {}
        for i in range(4):
            data, ext, reference = make_picture("jpeg", rng)
            m = marker(i)
            good.append((f"pair{i}", data, m))
            expected_pixels[m] = reference
        for key, data, m in good[:2]:
            members += [(f"{key}.jpg", data), (f"{key}.txt", f"{m} {_text(rng)}".encode())]
        extra_shards: list[Path] = []
        m_bad = marker(99)
        caption = f"{m_bad} {_text(rng)}".encode()
        good_bad_record = False
        if kind in GOOD_PICTURES or kind in BROKEN_PICTURES:
            data, ext, reference = make_picture(kind, rng)
            if ext == "gif":
                ext = "png"  # the dataset reads jpg|jpeg|png|webp members; the bytes decide the format
            members += [(f"odd.{ext}", data), ("odd.txt", caption)]
            if reference is not None:
                good_bad_record, expected_pixels[m_bad] = True, reference
        elif kind in TEXT_FAULTS:
            name, text = TEXT_FAULTS[kind](rng)
            members += [("odd.jpg", make_picture("jpeg", rng)[0]), *([(f"odd.{name}", text)] if name else [])]
        elif kind == "missing_image":
            members += [("odd.txt", caption)]
        elif kind == "duplicate_keys":  # one key written twice (as a retried writer does): two good records
            data, _, reference = make_picture("jpeg", rng)
            members += [("dup.jpg", good[2][1]), ("dup.txt", f"{good[2][2]} {_text(rng)}".encode())]
            members += [("dup.jpg", data), ("dup.txt", caption)]
            good_bad_record, expected_pixels[m_bad] = True, reference
        elif kind == "odd_member_names":
            members += [
                ("README", b"no extension"),
                (".hidden.txt", b"dot file"),
                ("__meta__.json", b"{}"),
                ("dir/sub/ключ ü.jpg", good[2][1]),
                ("dir/sub/ключ ü.txt", f"{good[2][2]} {_text(rng)}".encode()),
                ("x" * 200 + ".jpg", make_picture("jpeg", rng)[0]),
                ("x" * 200 + ".TXT", caption),
            ]
            good_bad_record = True
            expected_pixels.pop(m_bad, None)
        else:
            extra_shards.append(_broken_shard(kind, rng, workdir, caption))
        for key, data, m in good[2:] if kind not in ("duplicate_keys", "odd_member_names") else good[3:]:
            members += [(f"{key}.jpg", data), (f"{key}.txt", f"{m} {_text(rng)}".encode())]
        shard = workdir / "pairs-000.tar"
        write_tar(shard, members)
        markers = [m for _, _, m in good] + ([m_bad] if good_bad_record else [])
        dataset = ImageTextDataset([shard, *extra_shards], assets.tokenizer, assets.processor.transform_image, 48)
        out = 0
        skips: Counter = Counter()
        for sample in dataset.samples(Slot()):
            skips.update(sample["__skipped__"])
            if sample["__position__"].epoch > 0:
                break
            text = assets.tokenizer.decode(sample["input_ids"][sample["attention_mask"].bool()])
            hit = next((m for m in markers if m in text), None)
            reference = expected_pixels.get(hit) if hit else None
            out += hit is not None and (
                reference is None or matches(sample["pixel_values"][0, 0], reference, assets.processor)
            )
        return Outcome(good_out=out, good_expected=len(markers), skips=_skips(skips))

    return case


def _broken_shard(kind: str, rng: random.Random, workdir: Path, caption: bytes) -> Path:
    """A shard file next to the good one: truncated inside a member, empty, or not a tar at all."""
    path = workdir / "broken-001.tar"
    if kind == "truncated_shard":
        members = [("t0.jpg", make_picture("jpeg", rng)[0]), ("t0.txt", caption), ("t1.jpg", rng.randbytes(4000))]
        infos = write_tar(path, members + [("t1.txt", caption)])
        truncate_inside(path, infos, 2)
    elif kind == "zero_byte_shard":
        path.write_bytes(b"")
    elif kind == "random_bytes_shard":
        path.write_bytes(rng.randbytes(rng.randrange(1, 8192)))
    else:
        raise KeyError(kind)
    return path


TEXT_FAULTS: dict[str, Callable[[random.Random], tuple[str | None, bytes]]] = {
    "non_utf8_text": lambda rng: ("txt", "café crème".encode("latin-1") + rng.randbytes(8)),
    "empty_text": lambda rng: ("txt", b""),
    "whitespace_text": lambda rng: ("txt", b" \n\t "),
    "missing_text": lambda rng: (None, b""),
    "json_not_json": lambda rng: ("json", b"{caption: "),
    "json_no_caption": lambda rng: ("json", b'{"title": "x"}'),
    "json_caption_list": lambda rng: ("json", b'{"caption": ["a", "b"]}'),
    "json_caption_object": lambda rng: ("json", b'{"caption": {"en": "a red square"}}'),
    "json_caption_null": lambda rng: ("json", b'{"caption": null}'),
    "json_caption_bool": lambda rng: ("json", b'{"caption": true}'),
    "json_list": lambda rng: ("json", b'["a red square"]'),
    "nul_text": lambda rng: ("txt", b"\x00\x00\x00"),
}


def video_case(kind: str, rng: random.Random, assets: Assets, workdir: Path) -> Case:
    """VideoTextDataset: good clips, one broken (or odd but good) clip, good clips after it."""

    def case() -> Outcome:
        members: list[tuple[str, bytes]] = []
        markers = []
        for i in range(2):
            data, _ = make_video("video", rng)
            members += [(f"clip{i}.mp4", data), (f"clip{i}.txt", f"{marker(i)} {_text(rng)}".encode())]
            markers.append(marker(i))
        if kind in TEXT_FAULTS:
            name, text = TEXT_FAULTS[kind](rng)
            members += [("odd.mp4", make_video("video", rng)[0]), *([(f"odd.{name}", text)] if name else [])]
        else:
            data, good = make_video(kind, rng)
            members += [("odd.mp4", data), ("odd.txt", f"{marker(99)} {_text(rng)}".encode())]
            markers += [marker(99)] if good else []
        data, _ = make_video("video", rng)
        members += [("clip2.webm", data), ("clip2.txt", f"{marker(2)} {_text(rng)}".encode())]
        markers.append(marker(2))
        shard = workdir / "videos-000.tar"
        write_tar(shard, members)
        dataset = VideoTextDataset(shard, assets.tokenizer, assets.processor.transform_image, 48, num_frames=3, fps=2.0)
        texts, skips = first_epoch(dataset, assets.tokenizer)
        return Outcome(good_out=count_markers(texts, markers), good_expected=len(markers), skips=_skips(skips))

    return case


DOCUMENT_FAULTS: dict[str, Callable[[random.Random, str], bytes | None]] = {
    "document_missing": lambda rng, m: None,
    "document_not_json": lambda rng, m: b'{"items": [',
    "document_non_utf8": lambda rng, m: json.dumps({"items": [{"type": "text", "text": "caf\xe9"}]}).encode("latin-1"),
    "document_list": lambda rng, m: b"[1, 2, 3]",
    "document_no_items": lambda rng, m: b'{"url": "x"}',
    "document_items_not_list": lambda rng, m: b'{"items": 5}',
    "item_not_object": lambda rng, m: b'{"items": ["text", 3]}',
    "item_unknown_type": lambda rng, m: b'{"items": [{"type": "audio", "src": "0.jpg"}]}',
    "item_missing_type": lambda rng, m: b'{"items": [{"text": "hello"}]}',
    "text_not_string": lambda rng, m: b'{"items": [{"type": "text", "text": 12}, {"type": "image", "src": "0.jpg"}]}',
    "text_null": lambda rng, m: b'{"items": [{"type": "text", "text": null}, {"type": "image", "src": "0.jpg"}]}',
    "src_not_string": lambda rng, m: json.dumps(
        {"items": [{"type": "text", "text": m}, {"type": "image", "src": 0}]}
    ).encode(),
    "src_missing": lambda rng, m: json.dumps({"items": [{"type": "text", "text": m}, {"type": "image"}]}).encode(),
    "width_not_int": lambda rng, m: json.dumps(
        {"items": [{"type": "text", "text": m}, {"type": "image", "src": "0.jpg", "width": "wide"}]}
    ).encode(),
    "image_extra_field": lambda rng, m: json.dumps(
        {"items": [{"type": "text", "text": m}, {"type": "image", "src": "0.jpg", "colour": "red"}]}
    ).encode(),
    "image_member_missing": lambda rng, m: json.dumps(
        {"items": [{"type": "text", "text": m}, {"type": "image", "src": "7.jpg"}]}
    ).encode(),
    "no_text": lambda rng, m: b'{"items": [{"type": "image", "src": "0.jpg"}]}',
    "blank_text": lambda rng, m: b'{"items": [{"type": "text", "text": "   "}, {"type": "image", "src": "0.jpg"}]}',
    "no_images": lambda rng, m: json.dumps({"items": [{"type": "text", "text": m}]}).encode(),
    "too_many_images": lambda rng, m: json.dumps(
        {"items": [{"type": "text", "text": m}] + [{"type": "image", "src": "0.jpg"}] * 101}
    ).encode(),
    "marker_strings_in_text": lambda rng, m: json.dumps(
        {"items": [{"type": "text", "text": "<image><|endofchunk|>"}, {"type": "image", "src": "0.jpg"}]}
    ).encode(),
}


def _document(rng: random.Random, m: str, sources: list[str]) -> bytes:
    items = [{"type": "text", "text": f"{m} {_text(rng)}"}]
    for src in sources:
        items += [
            {"type": "image", "src": src, "alt": "", "width": 72, "height": 96},
            {"type": "text", "text": _text(rng)},
        ]
    return json.dumps({"url": "http://example.com", "items": items}).encode()


def interleaved_case(kind: str, rng: random.Random, assets: Assets, workdir: Path) -> Case:
    """InterleavedDataset: good documents, one broken document (picture, JSON or shard fault), good ones after."""

    def case() -> Outcome:
        members: list[tuple[str, bytes]] = []
        markers: list[str] = []

        def good_doc(i: int, key: str | None = None) -> None:
            key = key or f"doc{i}"
            members.extend(
                [(f"{key}.json", _document(rng, marker(i), ["0.jpg"])), (f"{key}.0.jpg", make_picture("jpeg", rng)[0])]
            )
            markers.append(marker(i))

        good_doc(0)
        good_doc(1)
        extra_shards: list[Path] = []
        if kind in GOOD_PICTURES or kind in BROKEN_PICTURES:
            data, ext, reference = make_picture(kind, rng)
            members += [("odd.json", _document(rng, marker(99), [f"0.{ext}"])), (f"odd.0.{ext}", data)]
            markers += [marker(99)] if reference is not None else []
        elif kind in DOCUMENT_FAULTS:
            document = DOCUMENT_FAULTS[kind](rng, marker(99))
            members += ([("odd.json", document)] if document is not None else []) + [
                ("odd.0.jpg", make_picture("jpeg", rng)[0])
            ]
            if kind == "marker_strings_in_text":  # the strings are text: a good record
                markers.append("image")
        elif kind == "duplicate_keys":
            good_doc(2, key="dup")
            good_doc(3, key="dup")
        elif kind == "odd_member_names":
            members += [("README", b"x"), (".hidden.json", b"{}"), ("__meta__.json", b"{}")]
            good_doc(2, key="dir/sub/ключ ü")
            good_doc(3, key="y" * 200)
        else:
            extra_shards.append(_broken_shard(kind, rng, workdir, b"caption"))
        good_doc(4)
        shard = workdir / "web-000.tar"
        write_tar(shard, members)
        config = InterleavedConfig(max_length=128, max_images=3, p_next=0.0)
        dataset = InterleavedDataset([shard, *extra_shards], assets.tokenizer, assets.processor.transform_image, config)
        texts, skips = first_epoch(dataset, assets.tokenizer)
        return Outcome(good_out=count_markers(texts, markers), good_expected=len(markers), skips=_skips(skips))

    return case


# ---------------------------------------------------------------------------------------------- build-web


def _deep_page(m: str, image: str, depth: int = 100_000) -> str:
    return (
        "<html><body>"
        + "<div>" * depth
        + f"<p>{m} deep text</p><img src='{image}'>"
        + "</div>" * depth
        + "</body></html>"
    )


HTML_FAULTS: dict[str, Callable[[random.Random, str, str], bytes]] = {
    "malformed_html": lambda rng, m, img: (
        f"<html><body><p>{m} unclosed <b>bold <i>both</p></b> <div><<>>& <img src={img} alt='a'><p>after"
    ).encode(),
    "binary_html": lambda rng, m, img: rng.randbytes(rng.randrange(1, 8192)),
    "binary_utf8_html": lambda rng, m, img: (
        "\x00\x01\x7f" + "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(500))
    ).encode(),
    "deeply_nested_html": lambda rng, m, img: _deep_page(m, img).encode(),
    "ten_thousand_images": lambda rng, m, img: (
        f"<p>{m}</p>" + "".join(f"<img src='img{i}.jpg'>" for i in range(10_000))
    ).encode(),
    "non_utf8_html": lambda rng, m, img: f"<p>{m} café</p><img src='{img}'>".encode("latin-1"),
    "empty_html": lambda rng, m, img: b"",
    "text_only_html": lambda rng, m, img: f"<p>{m} no picture here</p>".encode(),
    "image_only_html": lambda rng, m, img: f"<img src='{img}'>".encode(),
    "img_without_src": lambda rng, m, img: f"<p>{m}</p><img alt='x'><img src=''>".encode(),
    "img_missing_file": lambda rng, m, img: f"<p>{m}</p><img src='nope.jpg'>".encode(),
    "img_remote_and_data": lambda rng, m, img: (
        f"<p>{m}</p><img src='http://x/a.jpg'><img src='data:image/png;base64,AA'>".encode()
    ),
    "garbage_size_attributes": lambda rng, m, img: f"<p>{m}</p><img src='{img}' width='-5' height='1e999'>".encode(),
    "nul_bytes_html": lambda rng, m, img: f"<p>{m}\x00\x00</p>\x00<img src='{img}'>".encode(),
    "utf8_bom_html": lambda rng, m, img: "\ufeff".encode() + f"<p>{m}</p><img src='{img}'>".encode(),
}
# Pages that are still good records: their text and their good image must come out.
GOOD_HTML = frozenset({"malformed_html", "garbage_size_attributes", "nul_bytes_html", "utf8_bom_html"})


def build_web_case(kind: str, rng: random.Random, workdir: Path) -> Case:
    """``flamingo data build-web`` on a folder of good pages and one broken page (HTML or picture fault)."""

    def case() -> Outcome:
        pages = workdir / "pages"
        pages.mkdir()
        markers = []
        for i in range(2):
            data, ext, _ = make_picture("jpeg", rng)
            (pages / f"good{i}.{ext}").write_bytes(data)
            (pages / f"p{i}.html").write_text(
                f"<html><body><p>{marker(i)} {_text(rng)}</p><img src='good{i}.{ext}'></body></html>"
            )
            markers.append(marker(i))
        m = marker(99)
        if kind in HTML_FAULTS:
            data, ext, _ = make_picture("png", rng)
            (pages / f"odd.{ext}").write_bytes(data)
            (pages / "p5.html").write_bytes(HTML_FAULTS[kind](rng, m, f"odd.{ext}"))
            markers += [m] if kind in GOOD_HTML else []
        else:  # a page with a good picture and the odd one: the page is good; so is the odd picture if it is
            data, ext, reference = make_picture(kind, rng)
            (pages / f"odd.{ext}").write_bytes(data)
            (pages / "extra.png").write_bytes(make_picture("png", rng)[0])
            (pages / "p5.html").write_text(
                f"<p>{m} {_text(rng)}</p><img src='odd.{ext}'><p>{_text(rng)}</p><img src='extra.png'>"
            )
            markers.append(m)
        out = workdir / "shards"
        with contextlib.redirect_stdout(io.StringIO()):
            code = flamingo_main(
                ["data", "build-web", str(pages), "-o", str(out), "--no-progress", "--pages-per-shard", "2"]
            )
        report = build_web_shards(sorted(map(str, pages.glob("*.html"))), workdir / "again", progress=False)
        documents = []
        skipped = SkipCounts()
        for shard in sorted(out.glob("*.tar")):
            documents += [r["json"].decode() for r in read_shard(str(shard), skipped) if "json" in r]
        if code != 0 or skipped:
            raise ValueError(f"build-web exited {code}; shards unreadable: {dict(skipped)}")
        skips = Counter({f"page:{k}": v for k, v in report.pages_skipped.items()})
        skips.update({f"image:{k}": v for k, v in report.images_skipped.items()})
        return Outcome(good_out=count_markers(documents, markers), good_expected=len(markers), skips=skips)

    return case


# ---------------------------------------------------------------------------------------------- processor


def processor_case(kind: str, rng: random.Random, assets: Assets, workdir: Path) -> Case:
    """``FlamingoProcessor``: a batch of a good row and a row holding the odd media, as bytes, path or PIL."""

    def case() -> Outcome:
        processor = assets.processor
        form = rng.choice(["bytes", "path", "pil"])
        good_data, _, good_reference = make_picture("jpeg", rng)
        if kind in ARRAY_FAULTS:
            media, reference = ARRAY_FAULTS[kind](rng), None
        elif kind in GOOD_VIDEOS or kind in BROKEN_VIDEOS:
            data, good = make_video(kind, rng)
            media, reference = data, (True if good else None)
            if form == "path":
                media = workdir / "clip.mp4"
                media.write_bytes(data)
        elif kind in TEXT_PROMPTS:
            prompt = TEXT_PROMPTS[kind]
            batch = processor([prompt], images=[[good_data] * prompt.count("<image>")])
            return (
                Outcome(good_out=1, good_expected=1) if batch["input_ids"].shape[0] == 1 else Outcome(good_expected=1)
            )
        else:
            data, ext, reference = make_picture(kind, rng)
            media = data
            if form == "path":
                media = workdir / f"picture.{ext}"
                media.write_bytes(data)
            elif form == "pil" and reference is not None and kind != "exif_rotated_jpeg":
                media = Image.open(io.BytesIO(data))  # a picture already in memory is taken as it is (no EXIF turn)
        batch = processor(["<image>Output: a picture.", "<image>Output: the odd one."], images=[[good_data], [media]])
        pixels = batch["pixel_values"]  # (2, 1, t, c, h, w)
        out = int(matches(pixels[0, 0, 0], good_reference, processor))
        if isinstance(reference, Image.Image):
            out += int(matches(pixels[1, 0, 0], reference, processor))
        elif reference is True:
            out += int(bool(batch["media_mask"][1, 0]) and pixels.shape[2] >= 1)
        return Outcome(good_out=out, good_expected=1 + (reference is not None))

    return case


ARRAY_FAULTS: dict[str, Callable[[random.Random], object]] = {
    "array_5d": lambda rng: np.zeros((1, 2, 8, 8, 3), np.uint8),
    "array_two_channels": lambda rng: np.zeros((8, 8, 2), np.uint8),
    "array_empty": lambda rng: np.zeros((0, 0, 3), np.uint8),
    "array_zero_width": lambda rng: np.zeros((8, 0), np.uint8),
    "array_int64": lambda rng: np.ones((8, 8, 3), np.int64),
    "array_bool": lambda rng: np.ones((8, 8), bool),
    "array_float_out_of_range": lambda rng: np.full((8, 8, 3), 3.5, np.float32),
    "array_complex": lambda rng: np.ones((8, 8, 3), np.complex64),
    "array_object": lambda rng: np.array([[object()]], dtype=object),
    "video_array_empty": lambda rng: np.zeros((0, 8, 8, 3), np.uint8),
    "torch_tensor_media": lambda rng: torch.zeros(3, 8, 8),
    "none_media": lambda rng: None,
    "empty_frame_list": lambda rng: [],
    "frame_list_of_str": lambda rng: ["a", "b"],
}
TEXT_PROMPTS = {
    "empty_prompt": "",
    "marker_only_prompt": "<image>",
    "lone_surrogate_prompt": "<image>Output: \ud800 broken",
    "long_prompt": "<image>" + " red" * 20_000,
    "control_chars_prompt": "<image>\x00\x1b[31m\r\n",
}


# ---------------------------------------------------------------------------------------------- eval readers


def _good_vqa(root: Path, rng: random.Random, n: int) -> list[dict]:
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        image_id = 100 + i
        (root / f"val2014/COCO_val2014_{image_id:012d}.jpg").write_bytes(make_picture("jpeg", rng)[0])
        records.append({"question_id": i, "image_id": image_id, "question": f"{marker(i)}?", "answers": ["red"] * 3})
    return records


def _mutations(rng: random.Random) -> list[Callable[[dict], object]]:
    """Ways to break one record: a field removed, a field of the wrong type, the record not an object."""

    def drop(r: dict) -> dict:
        r = dict(r)
        r.pop(rng.choice(sorted(r)), None)
        return r

    def retype(r: dict) -> dict:
        r = dict(r)
        r[rng.choice(sorted(r))] = rng.choice([None, 3.5, [], {"a": 1}, True, "", -1, ["x", 2]])
        return r

    return [drop, retype, lambda r: rng.choice([None, 7, "record", [r]])]


def eval_case(kind: str, rng: random.Random, workdir: Path) -> Case:
    """A ``flamingo eval`` task reader on its benchmark's files: good records and broken ones (or broken files)."""
    task, fault = kind.split(":")

    def case() -> Outcome:
        root = workdir / task
        root.mkdir()
        spec = TASKS[task]
        n_good = 3
        if task in ("vqav2", "okvqa"):
            records = _good_vqa(root, rng, n_good)
            questions = [{k: r[k] for k in ("question_id", "image_id", "question")} for r in records]
            annotations = [
                {"question_id": r["question_id"], "answers": [{"answer": a} for a in r["answers"]]} for r in records
            ]
            prefix = "v2_" if task == "vqav2" else ""
            names = (f"{prefix}OpenEnded_mscoco_val2014_questions.json", f"{prefix}mscoco_val2014_annotations.json")
            files = {names[0]: {"questions": questions}, names[1]: {"annotations": annotations}}
            bad_lists = [("questions", names[0]), ("annotations", names[1])]
        elif task == "coco":
            (root / "val2014").mkdir()
            images = []
            for i in range(n_good):
                (root / f"val2014/c{i}.jpg").write_bytes(make_picture("jpeg", rng)[0])
                images.append(
                    {
                        "filename": f"c{i}.jpg",
                        "filepath": "val2014",
                        "split": "test",
                        "sentences": [{"raw": f"{marker(i)} x"}],
                    }
                )
            files = {"dataset_coco.json": {"images": images}}
            bad_lists = [("images", "dataset_coco.json")]
        elif task == "hateful_memes":
            (root / "img").mkdir()
            lines = []
            for i in range(n_good):
                (root / f"img/{i}.png").write_bytes(make_picture("png", rng)[0])
                lines.append({"id": i, "img": f"img/{i}.png", "text": marker(i), "label": i % 2})
            files = {"dev_seen.jsonl": lines}
            bad_lists = [(None, "dev_seen.jsonl")]
        elif task == "msrvttqa":
            (root / "videos").mkdir()
            records = []
            for i in range(n_good):
                (root / f"videos/video{i}.mp4").write_bytes(b"not decoded by the reader")
                records.append({"id": i, "video_id": i, "question": f"{marker(i)}?", "answer": "red"})
            files = {"test_qa.json": records}
            bad_lists = [(None, "test_qa.json")]
        elif task == "textvqa":
            (root / "train_images").mkdir()
            data = []
            for i in range(n_good):
                (root / f"train_images/t{i}.jpg").write_bytes(make_picture("jpeg", rng)[0])
                data.append({"question_id": i, "image_id": f"t{i}", "question": f"{marker(i)}?", "answers": ["red"]})
            files = {"TextVQA_0.5.1_val.json": {"data": data}}
            bad_lists = [("data", "TextVQA_0.5.1_val.json")]
        elif task == "vizwiz":
            (root / "val").mkdir()
            data = []
            for i in range(n_good):
                (root / f"val/v{i}.jpg").write_bytes(make_picture("jpeg", rng)[0])
                data.append({"image": f"v{i}.jpg", "question": f"{marker(i)}?", "answers": [{"answer": "red"}]})
            (root / "Annotations").mkdir()
            files = {"Annotations/val.json": data}
            bad_lists = [(None, "Annotations/val.json")]
        else:  # shapesworld_attribute: episodes
            (root / "images").mkdir()
            episodes = []
            for i in range(n_good):
                (root / f"images/{i}.png").write_bytes(make_picture("png", rng)[0])
                episodes.append(
                    {
                        "id": marker(i),
                        "kind": "colour",
                        "support": [{"image": f"images/{i}.png", "answer": "red"}],
                        "query": {"image": f"images/{i}.png", "answer": "red"},
                        "candidates": ["red", "blue"],
                    }
                )
            files = {
                "test.json": {
                    "template": "<image>Output: {answer}<|endofchunk|>",
                    "candidates": ["red"],
                    "episodes": episodes,
                }
            }
            bad_lists = [("episodes", "test.json")]
        key, name = rng.choice(bad_lists)
        container = files[name] if key is None else files[name][key]
        expected = n_good
        if fault == "bad_record":  # one broken record among the good ones: a counted skip
            mutate = rng.choice(_mutations(rng))
            fresh = {k: 999 for k in ("question_id", "id") if k in container[0]}  # never a good record's id
            container.insert(rng.randrange(len(container) + 1), mutate({**container[0], **fresh}))
        elif fault == "bad_container":  # the list is not a list: the whole file is refused
            files[name] = (
                rng.choice([None, 5, "text"])
                if key is None
                else {**files[name], key: rng.choice([None, 5, "x", {"a": 1}])}
            )
            expected = 0
        written = {}
        for fname, content in files.items():
            if fname.endswith(".jsonl"):
                text = "\n".join(json.dumps(r) for r in content) if isinstance(content, list) else json.dumps(content)
            else:
                text = json.dumps(content)
            written[fname] = text.encode()
        if fault == "non_utf8_file":
            written[name] = (
                written[name].replace(b'"', b'"\xe9', 1) if rng.random() < 0.5 else b"\xff\xfe" + written[name]
            )
            expected = 0
        elif fault == "truncated_file":
            written[name] = written[name][: rng.randrange(1, len(written[name]))]
            expected = 0
        elif fault == "empty_file":
            written[name] = b""
            expected = 0
        for fname, data in written.items():
            (root / fname).write_bytes(data)
        split = spec.reader(root, spec.eval_split)
        texts = [json.dumps([e.id, e.fields, e.answer, e.references]) for e in split.examples]
        good = count_markers(texts, [marker(i) for i in range(n_good)])
        if expected == 0 and good:  # a damaged file may still parse (a truncated JSONL); its good records count
            expected = good
        return Outcome(good_out=good, good_expected=expected, skips=Counter(split.bad))

    return case


EVAL_TASKS = ("vqav2", "okvqa", "textvqa", "vizwiz", "coco", "hateful_memes", "msrvttqa", "shapesworld_attribute")
EVAL_FAULTS = ("bad_record", "bad_container", "non_utf8_file", "truncated_file", "empty_file")


# ---------------------------------------------------------------------------------------------- generate and model


def generate_case(kind: str, rng: random.Random, assets: Assets, workdir: Path) -> Case:
    """``flamingo generate --model DIR --image FILE --prompt P`` with an odd picture, video or prompt."""

    def case() -> Outcome:
        prompt = "<image>Output:"
        good = True
        if kind in TEXT_PROMPTS:
            prompt = TEXT_PROMPTS[kind] if TEXT_PROMPTS[kind].count("<image>") == 1 else TEXT_PROMPTS[kind] + "<image>"
            prompt = prompt[:2000]
            path = workdir / "picture.jpg"
            path.write_bytes(make_picture("jpeg", rng)[0])
        elif kind in GOOD_VIDEOS or kind in BROKEN_VIDEOS:
            data, good = make_video(kind, rng)
            path = workdir / "clip.mp4"
            path.write_bytes(data)
        elif kind == "missing_file":
            path, good = workdir / "nothing.jpg", False
        elif kind == "marker_mismatch":
            prompt, good = "<image><image>Output:", False
            path = workdir / "picture.jpg"
            path.write_bytes(make_picture("jpeg", rng)[0])
        else:
            data, ext, reference = make_picture(kind, rng)
            path, good = workdir / f"picture.{ext}", reference is not None
            path.write_bytes(data)
        stdout = io.StringIO()
        argv = ["generate", "--model", str(assets.model_dir), "--image", str(path), "--prompt", prompt]
        with contextlib.redirect_stdout(stdout):
            code = flamingo_main([*argv, "--num-beams", "2", "--max-new-tokens", "3", "--device", "cpu"])
        return Outcome(good_out=int(code == 0 and good), good_expected=int(good))

    return case


def model_case(kind: str, rng: random.Random, assets: Assets) -> Case:
    """The model API (forward, generate, score) given tensors of the wrong shape or dtype."""

    def case() -> Outcome:
        model, processor = assets.model, assets.processor
        batch = dict(processor(["<image>Output: a red square."], images=[[make_picture("jpeg", rng)[0]]]))
        method = rng.choice(["forward", "generate"])
        if kind == "good":
            pass
        else:
            MODEL_FAULTS[kind](batch, rng, model)
        with torch.no_grad():
            if method == "forward":
                model(**batch)
            else:
                model.generate(**batch, max_new_tokens=2, num_beams=2)
        return Outcome(good_out=1, good_expected=1) if kind == "good" else Outcome()  # accepted: it was usable

    return case


def _set(
    key: str, value: Callable[[dict, random.Random, Flamingo], object]
) -> Callable[[dict, random.Random, Flamingo], None]:
    def apply(batch: dict, rng: random.Random, model: Flamingo) -> None:
        batch[key] = value(batch, rng, model)

    return apply


def _last_token(input_ids: torch.Tensor, value: int) -> torch.Tensor:
    """The ids with the last (text) token replaced: the ``<image>`` token stays, so only the id is wrong."""
    out = input_ids.clone()
    out[:, -1] = value
    return out


MODEL_FAULTS: dict[str, Callable[[dict, random.Random, Flamingo], None]] = {
    "input_ids_float": _set("input_ids", lambda b, r, m: b["input_ids"].float()),
    "input_ids_1d": _set("input_ids", lambda b, r, m: b["input_ids"][0]),
    "input_ids_3d": _set("input_ids", lambda b, r, m: b["input_ids"][None]),
    "input_ids_out_of_vocab": _set("input_ids", lambda b, r, m: _last_token(b["input_ids"], len(m.tokenizer) + 7)),
    "input_ids_negative": _set("input_ids", lambda b, r, m: _last_token(b["input_ids"], -3)),
    "input_ids_empty": _set("input_ids", lambda b, r, m: b["input_ids"][:, :0]),
    "input_ids_list": _set("input_ids", lambda b, r, m: b["input_ids"].tolist()),
    "attention_mask_wrong_shape": _set("attention_mask", lambda b, r, m: b["attention_mask"][:, 1:]),
    "attention_mask_float_values": _set("attention_mask", lambda b, r, m: b["attention_mask"].float() * 0.5),
    "pixel_values_5d": _set("pixel_values", lambda b, r, m: b["pixel_values"][:, 0]),
    "pixel_values_wrong_size": _set("pixel_values", lambda b, r, m: torch.zeros(1, 1, 1, 3, SIZE + 1, SIZE)),
    "pixel_values_int": _set("pixel_values", lambda b, r, m: b["pixel_values"].to(torch.int64)),
    "pixel_values_numpy": _set("pixel_values", lambda b, r, m: b["pixel_values"].numpy()),
    "pixel_values_batch_mismatch": _set("pixel_values", lambda b, r, m: b["pixel_values"].repeat(2, 1, 1, 1, 1, 1)),
    "media_mask_wrong_shape": _set("media_mask", lambda b, r, m: torch.ones(1, 3, dtype=torch.bool)),
    "media_mask_float": _set("media_mask", lambda b, r, m: torch.full((1, 1), 0.3)),
    "too_many_frames": _set("pixel_values", lambda b, r, m: b["pixel_values"].repeat(1, 1, 9, 1, 1, 1)),
    "missing_pixels": _set("pixel_values", lambda b, r, m: None),
}


# ---------------------------------------------------------------------------------------------- the campaign


def _paths(assets: Assets) -> list[tuple[str, list[str], int, Callable[[str, random.Random, Path], Case]]]:
    """(table path, kinds to cycle through, cases at scale 1.0, case builder)."""
    pictures = _picture_kinds()
    return [
        ("data build-web", [*HTML_FAULTS, *pictures], 50, lambda k, r, w: build_web_case(k, r, w)),
        (
            "InterleavedDataset",
            [*DOCUMENT_FAULTS, *pictures, *_shard_kinds()],
            50,
            lambda k, r, w: interleaved_case(k, r, assets, w),
        ),
        (
            "ImageTextDataset",
            [*pictures, *TEXT_FAULTS, "missing_image", *_shard_kinds()],
            45,
            lambda k, r, w: pair_case(k, r, assets, w),
        ),
        (
            "VideoTextDataset",
            [*GOOD_VIDEOS, *BROKEN_VIDEOS, *list(TEXT_FAULTS)[:4]],
            25,
            lambda k, r, w: video_case(k, r, assets, w),
        ),
        (
            "FlamingoProcessor",
            [*pictures, *ARRAY_FAULTS, *GOOD_VIDEOS, *BROKEN_VIDEOS, *TEXT_PROMPTS],
            60,
            lambda k, r, w: processor_case(k, r, assets, w),
        ),
        (
            "eval task readers",
            [f"{t}:{f}" for f in EVAL_FAULTS for t in EVAL_TASKS],
            50,
            lambda k, r, w: eval_case(k, r, w),
        ),
        (
            "flamingo generate",
            [*pictures, "missing_file", "marker_mismatch", *GOOD_VIDEOS, *BROKEN_VIDEOS[:3], *TEXT_PROMPTS],
            25,
            lambda k, r, w: generate_case(k, r, assets, w),
        ),
        ("model API", ["good", *MODEL_FAULTS], 20, lambda k, r, w: model_case(k, r, assets)),
    ]


def run(seed: int, scale: float = 1.0, workdir: Path | None = None) -> list[Row]:
    """Every input path's cases (``scale`` × the full count, at least one each); one table row per path."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="faults-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    assets = Assets(workdir / "assets", seed)
    rows = []
    for path, kinds, full, build in _paths(assets):
        row = Row(CAMPAIGN, path)
        order = list(kinds)
        random.Random(f"{seed}/{path}").shuffle(order)  # a slice draws a seeded subset of the kinds
        n_cases = max(1, round(full * scale))
        row.extra["fault kinds"] = min(n_cases, len(order))
        for i in range(n_cases):
            kind = order[i % len(order)]
            case_dir = workdir / f"{path.replace(' ', '-')}-{i:04d}"
            case_dir.mkdir()
            case_rng = random.Random(f"{seed}/{path}/{i}")
            run_case(row, f"{kind} #{i}", build(kind, case_rng, case_dir), timeout=TIMEOUT)
        rows.append(row)
    return rows
