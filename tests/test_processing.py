"""FlamingoProcessor: input forms agree, padding is faithful, pixels are what the model expects."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from flamingo_vlm.processing import FlamingoProcessor, cut_answer, field_labels
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN

SIZE, MEAN, STD = 16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def proc(tokenizer_dir) -> FlamingoProcessor:
    return FlamingoProcessor(AutoTokenizer.from_pretrained(tokenizer_dir), SIZE, MEAN, STD, max_frames=4)


def noise(seed: int, size: tuple[int, int] = (24, 18)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def unpadded_rows(batch) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


def assert_same_batch(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_interleaved_and_marker_forms_give_identical_tensors(proc):
    img1, img2, img3 = noise(1), noise(2), noise(3)
    video = [noise(4), noise(5)]
    interleaved = proc(
        [
            [img1, "Output: a red square.", EOC_TOKEN, img2, "Output:"],
            ["Question: how many shapes? Answer:", video, " three", EOC_TOKEN, img3],
        ]
    )
    marked = proc(
        [
            f"{MEDIA_TOKEN}Output: a red square.{EOC_TOKEN}{MEDIA_TOKEN}Output:",
            f"Question: how many shapes? Answer:{MEDIA_TOKEN} three{EOC_TOKEN}{MEDIA_TOKEN}",
        ],
        images=[[img1, img2], [video, img3]],
    )
    assert_same_batch(interleaved, marked)
    assert interleaved["pixel_values"].shape == (2, 2, 2, 3, SIZE, SIZE)
    assert interleaved["pixel_values"].dtype == torch.float32
    # the j-th <image> of a row is media slot j: the video sits in slot 0 of row 1
    assert torch.equal(interleaved["pixel_values"][1, 0, 1], proc.transform_image(video[1]))
    for row in unpadded_rows(interleaved):
        assert row.count(proc.media_token_id) == 2


def test_single_item_is_a_batch_of_one(proc):
    img = noise(0)
    single = proc(f"{MEDIA_TOKEN}Output:", images=[img])
    nested = proc([f"{MEDIA_TOKEN}Output:"], images=[[img]])
    interleaved = proc([img, "Output:"])
    assert_same_batch(single, nested)
    assert_same_batch(single, interleaved)
    assert single["input_ids"].shape[0] == 1


def test_left_and_right_padding_hold_the_same_tokens(proc):
    texts = [f"{MEDIA_TOKEN}Output: a red square.{EOC_TOKEN}", f"{MEDIA_TOKEN}Output:"]
    images = [[noise(0)], [noise(1)]]
    left = proc(texts, images=images, padding_side="left")
    right = proc(texts, images=images, padding_side="right")
    assert unpadded_rows(left) == unpadded_rows(right)
    short = int(left["attention_mask"][1].sum())
    assert left["attention_mask"][1, -short:].all() and not left["attention_mask"][1, :-short].any()
    assert right["attention_mask"][1, :short].all() and not right["attention_mask"][1, short:].any()
    assert (left["input_ids"][left["attention_mask"] == 0] == proc.tokenizer.pad_token_id).all()
    assert torch.equal(left["pixel_values"], right["pixel_values"])


def test_max_length_padding_and_overflow(proc):
    text = f"{MEDIA_TOKEN}Output: a red square."
    n = len(proc.tokenizer(text)["input_ids"])
    padded = proc(text, images=[noise(0)], padding="max_length", max_length=n + 3)
    assert padded["input_ids"].shape == (1, n + 3) and int(padded["attention_mask"].sum()) == n
    with pytest.raises(ValueError, match=rf"item 1 is {n} tokens long, more than max_length={n - 1}"):
        proc(["Output:", text], images=[[], [noise(0)]], max_length=n - 1)


def test_arrays_files_and_bytes_match_pil(proc, tmp_path, monkeypatch):
    img = noise(7)
    expected = proc.transform_image(img)
    array = np.asarray(img)
    path = tmp_path / "img.png"
    img.save(path)
    assert torch.equal(proc.transform_image(array), expected)
    assert torch.equal(proc.transform_image(array.astype(np.float32) / 255), expected)
    for source in (path, path.read_bytes()):
        assert torch.equal(proc.transform_media(source), expected[None])
    # inside an interleaved list an existing image path string is media, other strings are text
    from_path = proc([str(path), "Output:"])
    assert_same_batch(from_path, proc([img, "Output:"]))
    monkeypatch.chdir(tmp_path)
    assert_same_batch(proc([["img.png", "Output:"]]), from_path)
    as_text = proc([["other.png", "Output:"]])  # no such file: text
    assert proc.tokenizer.decode(as_text["input_ids"][0]) == "other.pngOutput:"


def test_mixed_images_and_videos_pad_frames_by_repeating(proc):
    img, frames = noise(0), [noise(i) for i in range(1, 4)]
    batch = proc([[img, "a", frames, "b"], ["c", img]])
    pixels, mask = batch["pixel_values"], batch["media_mask"]  # (2, 2, 3, c, h, w), (2, 2)
    assert pixels.shape == (2, 2, 3, 3, SIZE, SIZE)
    image = proc.transform_image(img)
    for t in range(3):
        assert torch.equal(pixels[0, 0, t], image)  # an image stays that image in every frame slot
        assert torch.equal(pixels[0, 1, t], proc.transform_image(frames[t]))
        assert torch.equal(pixels[1, 0, t], image)
    assert mask.tolist() == [[True, True], [True, False]]
    assert torch.all(pixels[1, 1] == 0)  # padding slots are zeros


def test_short_video_repeats_its_last_frame(proc):
    batch = proc([[[noise(1), noise(2)], [noise(i) for i in range(3, 7)]]])
    assert batch["pixel_values"].shape[2] == 4
    assert torch.equal(batch["pixel_values"][0, 0, 2], batch["pixel_values"][0, 0, 1])
    assert torch.equal(batch["pixel_values"][0, 0, 3], proc.transform_image(noise(2)))


def test_long_frame_list_is_subsampled_to_max_frames(proc):
    frames = [noise(i) for i in range(10)]
    pixels = proc.transform_media(frames)
    assert pixels.shape == (4, 3, SIZE, SIZE)
    assert torch.equal(pixels[1], proc.transform_image(frames[3]))  # evenly: 0, 3, 6, 9
    stacked = proc.transform_media(np.stack([np.asarray(f) for f in frames]))  # (t, h, w, c) array
    assert torch.equal(stacked, pixels)


def test_video_file_is_sampled_and_capped(proc, tmp_path):
    pytest.importorskip("av")
    from flamingo_vlm.video import write_video

    path = tmp_path / "clip.mp4"
    write_video([np.full((20, 30, 3), 10 * i, np.uint8) for i in range(12)], path, fps=2)  # 6 s
    batch = proc(["Question: what moves?", str(path), "Answer:"])
    assert batch["pixel_values"].shape == (1, 1, 4, 3, SIZE, SIZE)  # 6 sampled at 1 fps, capped at 4
    assert batch["media_mask"].tolist() == [[True]]
    assert proc.tokenizer.decode(batch["input_ids"][0]) == f"Question: what moves?{MEDIA_TOKEN}Answer:"
    assert len(proc.load_video(path, fps=2.0, max_frames=100)) == 12
    segment = proc.load_video(f"{path}#t=1,4", fps=2.0, max_frames=100)  # an annotated segment: t in [1, 4) s
    assert [round(np.asarray(f).mean() / 10) for f in segment] == [2, 3, 4, 5, 6, 7]


def test_batch_without_media_still_gets_tensors(proc):
    batch = proc(["Output: a red square.", "Output:"])
    assert batch["pixel_values"].shape == (2, 0, 1, 3, SIZE, SIZE)
    assert batch["media_mask"].shape == (2, 0) and batch["media_mask"].dtype == torch.bool
    mixed = proc(["Output:", f"{MEDIA_TOKEN}Output:"], images=[[], [noise(0)]])
    assert mixed["media_mask"].tolist() == [[False], [True]]


def test_marker_count_mismatch_names_item_and_counts(proc):
    with pytest.raises(ValueError, match=r"item 1: its text has 2 <image> marker\(s\) but 1 media were given"):
        proc(["Output:", f"{MEDIA_TOKEN}a{MEDIA_TOKEN}b"], images=[[], [noise(0)]])
    with pytest.raises(ValueError, match=r"item 0: its text has 2 <image> marker\(s\) but 1 media"):
        proc([[f"{MEDIA_TOKEN}written by hand", noise(0)]])
    with pytest.raises(ValueError, match="got 2 texts but images for 1 items"):
        proc(["a", "b"], images=[[noise(0)]])
    with pytest.raises(ValueError, match="interleaved lists carry their own media"):
        proc([["a", noise(0)]], images=[[noise(0)]])


def test_undecodable_media_raise_named_errors(proc, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all" * 4)
    with pytest.raises(ValueError, match=r"item 0, media 0: cannot decode '.*broken\.png' as an image or a video"):
        proc(f"{MEDIA_TOKEN}Output:", images=[bad])
    with pytest.raises(ValueError, match=r"item 0, media 1: cannot decode <9 bytes>"):
        proc([[noise(0), "a", b"\x89PNG junk", "b"]])
    with pytest.raises(ValueError, match="a video has no frames"):
        proc([[[], "empty video"]])
    with pytest.raises(ValueError, match="float image arrays must lie in"):
        proc.transform_image(np.full((4, 4, 3), 2.0))
    with pytest.raises(ValueError, match="unsupported media type"):
        proc(f"{MEDIA_TOKEN}", images=[{"not": "media"}])


def test_non_finite_media_name_the_item_and_the_frame(proc):
    video = np.full((3, 8, 8, 3), 0.5)
    video[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"item 0, media 1: frame 1 of 3: image array .* holds 1 NaN"):
        proc([[noise(0), "a", video, "b"]])
    with pytest.raises(ValueError, match=r"item 0, media 0: image array .* 0 NaN and 192 infinite"):
        proc(f"{MEDIA_TOKEN}Output:", images=[np.full((8, 8, 3), np.inf)])


def test_video_file_without_frames_raises(proc, tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "silent.avi"
    with av.open(str(path), mode="w") as container:  # a video stream, but not one frame in it
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()
    with pytest.raises(ValueError, match=r"item 0, media 0: '.*silent\.avi' has no video frames"):
        proc([str(path), "Output:"])


def test_save_and_from_pretrained_round_trip(proc, tmp_path):
    texts = [f"{MEDIA_TOKEN}Output: a red square.{EOC_TOKEN}{MEDIA_TOKEN}Output:", "Output:"]
    images = [[noise(0), [noise(1), noise(2)]], []]
    proc.save_pretrained(tmp_path / "proc")
    restored = FlamingoProcessor.from_pretrained(tmp_path / "proc")
    assert restored.config == proc.config
    assert (restored.media_token_id, restored.eoc_token_id) == (proc.media_token_id, proc.eoc_token_id)
    assert_same_batch(restored(texts, images=images), proc(texts, images=images))
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        FlamingoProcessor.from_pretrained(tmp_path)


def test_from_model_reads_the_model_and_accepts_overrides(tokenizer_dir):
    model = SimpleNamespace(
        tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir),
        vision=SimpleNamespace(image_size=24, image_mean=MEAN, image_std=STD),
        config=SimpleNamespace(max_frames=6),
    )
    proc = FlamingoProcessor.from_model(model)
    assert (proc.config.image_size, proc.config.max_frames, proc.config.image_mean) == (24, 6, MEAN)
    assert proc.tokenizer is model.tokenizer
    assert FlamingoProcessor.from_model(model, max_frames=2, image_size=8).config.max_frames == 2


def test_batch_decode_returns_only_the_new_text(proc):
    tok = proc.tokenizer
    texts = [f"{MEDIA_TOKEN}Output:", f"{MEDIA_TOKEN}Question: how many? Answer:"]
    batch = proc(texts, images=[[noise(0)], [noise(1)]])
    width = batch["input_ids"].shape[1]
    new = [
        tok(" a red square.", add_special_tokens=False)["input_ids"] + [proc.eoc_token_id, 5, 6],
        tok(" three", add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
    ]
    longest = max(map(len, new))
    new = [row + [tok.pad_token_id] * (longest - len(row)) for row in new]
    sequences = torch.cat([batch["input_ids"], torch.tensor(new)], dim=1)  # what generate returns
    assert proc.batch_decode(sequences, prompt_length=width) == ["a red square.", "three"]
    assert proc.decode(sequences[1], prompt_length=width) == "three"
    assert proc.batch_decode(batch["input_ids"])[0] == "Output:"  # special tokens (<image>, pads) skipped


def test_batch_decode_cuts_at_stop_labels(proc):
    tok = proc.tokenizer
    prompt = f"{MEDIA_TOKEN}Question: what colour? Answer:"
    batch = proc([prompt], images=[[noise(0)]])
    new = tok(" red Question: how many? Answer: 2", add_special_tokens=False)["input_ids"] + [proc.eoc_token_id]
    sequences = torch.cat([batch["input_ids"], torch.tensor([new])], dim=1)
    width = batch["input_ids"].shape[1]
    labels = field_labels(prompt)
    assert proc.batch_decode(sequences, prompt_length=width, stop_labels=labels) == ["red"]
    assert proc.decode(sequences[0], prompt_length=width, stop_labels=labels) == "red"
    assert proc.batch_decode(sequences, prompt_length=width) == ["red Question: how many? Answer: 2"]  # no cut


def test_labels_end_a_generated_answer() -> None:
    vqa = field_labels("<image>Question: {question} Answer: {answer}<|endofchunk|>")
    assert vqa == ("Question:", "Answer:")
    assert cut_answer(" red Question: How many shapes are there? Answer: 2", vqa) == "red"
    assert cut_answer(" bottom left\nQuestion", vqa) == "bottom left"
    assert cut_answer(" top right", vqa) == "top right"
    # max_new_tokens ran out between the label and its colon
    assert cut_answer(" left Question", vqa) == "left"
    assert cut_answer(" yes Answer ", vqa) == "yes"
    # a bare label word ends the answer only where the generation ends
    assert cut_answer(" Questionable Answers", vqa) == "Questionable Answers"
    assert cut_answer(" the Answer is left", vqa) == "the Answer is left"
    short = field_labels("<image>Q: {question} A: {answer}<|endofchunk|>")
    assert cut_answer(" A red circle on the left", short) == "A red circle on the left"
    assert cut_answer(" a red circle Q: how many?", short) == "a red circle"
    assert cut_answer(" a red circle Q", short) == "a red circle"
    assert cut_answer(" A", short) == "A"  # an answer, not a label after one
    assert cut_answer(" a red circle\nmore", field_labels("<image>{answer}")) == "a red circle"  # no labels


def test_tokenize_candidates_match_plain_tokenization(proc):
    candidates = [[" yes", " no"], [" a red square", " two blue circles", " x"]]
    ids = proc.tokenize_candidates(candidates)
    assert ids == [[proc.tokenizer(c, add_special_tokens=False)["input_ids"] for c in row] for row in candidates]
    assert len(ids[1]) == 3
    with pytest.raises(ValueError, match=r"row 0: candidates \[''\] tokenize to nothing"):
        proc.tokenize_candidates([["", " no"]])


def test_constructor_is_idempotent_on_the_tokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    first = FlamingoProcessor(tok, SIZE, MEAN, STD)
    n = len(tok)
    second = FlamingoProcessor(tok, SIZE, MEAN, STD)
    assert len(tok) == n and first.media_token_id == second.media_token_id
    with pytest.raises(ValueError, match="image_mean and image_std"):
        FlamingoProcessor(tok, SIZE, (0.5, 0.5), STD)


def test_decompression_bombs_and_invalid_unicode_are_named(proc):
    """Fuzz campaign: both escaped as exceptions other than ValueError (DecompressionBombError, TypeError)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0))  # 9e8 pixels declared
    bomb = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")
    with pytest.raises(ValueError, match=r"item 0, media 0: <\d+ bytes> is too large to decode"):
        proc([f"{MEDIA_TOKEN}a"], images=[[bomb]])
    with pytest.raises(ValueError, match="item 0: the text is not valid Unicode"):
        proc(["a \ud800 b"])


def test_exif_orientation_is_applied_to_encoded_pictures(proc, tmp_path):
    """A photo's bytes or file give the upright picture; a PIL image in memory is taken as it is."""
    import io

    picture = noise(3, size=(30, 12))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    picture.transpose(Image.Transpose.ROTATE_90).save(buffer, "PNG", exif=exif)
    expected = proc.transform_image(picture)
    assert torch.equal(proc.transform_media(buffer.getvalue())[0], expected)
    (tmp_path / "photo.png").write_bytes(buffer.getvalue())
    assert torch.equal(proc.transform_media(tmp_path / "photo.png")[0], expected)
