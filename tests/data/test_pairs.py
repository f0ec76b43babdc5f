import os

import pytest
import torch
from data_fixtures import image_bytes, noisy_jpeg, transform, write_shard

from flamingo_vlm.data import ImageTextDataset, SkipCounts, Slot, VideoTextDataset
from flamingo_vlm.data.shards import read_shard
from flamingo_vlm.data.text import IGNORE_INDEX, tokenize_plain
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN
from flamingo_vlm.video import write_video


def epoch(dataset):
    """Samples of one epoch (slot 0 of 1), and the skip counts they carried.

    Skips after an epoch's last sample travel with the next epoch's first sample.
    """
    stream = dataset.samples(Slot())
    samples, skipped = [], {}
    while True:
        s = next(stream)
        for k, v in s["__skipped__"].items():
            skipped[k] = skipped.get(k, 0) + v
        if s["__position__"].epoch > 0:
            return samples, skipped
        samples.append(s)


def test_image_text_pairs_with_every_bad_case(tmp_path, tokenizer):
    media, eoc = tokenizer.convert_tokens_to_ids([MEDIA_TOKEN, EOC_TOKEN])
    good = [{"__key__": f"ok{i}", "png": image_bytes(color=(i, 0, 0)), "txt": f"a red square {i}"} for i in range(4)]
    good.append({"__key__": "ok_json", "jpg": image_bytes(fmt="JPEG"), "json": '{"caption": "a blue circle"}'})
    good.append({"__key__": "ok_long", "webp": image_bytes(fmt="WEBP"), "txt": "two yellow stars " * 40})
    bad = [
        {"__key__": "truncated", "jpg": noisy_jpeg(1)[:600], "txt": "x"},
        {"__key__": "garbage", "png": b"\x89PNG nope", "txt": "x"},
        {"__key__": "latin1", "png": image_bytes(), "txt": "caf\xe9".encode("latin-1")},
        {"__key__": "empty", "png": image_bytes(), "txt": "  \n "},
        {"__key__": "no_text", "png": image_bytes()},
        {"__key__": "no_image", "txt": "lonely caption"},
        {"__key__": "bad_json", "png": image_bytes(), "json": '{"url": "no caption"}'},
    ]
    shard = write_shard(tmp_path / "pairs.tar", good[:3] + bad + good[3:])
    samples, skipped = epoch(ImageTextDataset(shard, tokenizer, transform, max_length=32))
    assert skipped == {
        "undecodable_image": 2,
        "non_utf8_text": 1,
        "empty_text": 1,
        "missing_text": 1,
        "missing_image": 1,
        "bad_caption_json": 1,
    }
    assert len(samples) + sum(skipped.values()) == len(good) + len(bad)
    for s in samples:
        ids, labels = s["input_ids"], s["labels"]
        n = int(s["attention_mask"].sum())
        assert ids.shape == (32,) and ids[0] == media and ids[n - 1] == eoc and (ids == media).sum() == 1
        assert labels[0] == IGNORE_INDEX and torch.equal(labels[1:n], ids[1:n]) and (labels[n:] == IGNORE_INDEX).all()
        assert s["pixel_values"].shape == (1, 1, 3, 16, 16)
    texts = sorted(tokenizer.decode(s["input_ids"][1 : int(s["attention_mask"].sum()) - 1]) for s in samples)
    assert "a blue circle" in texts and tokenize_plain(tokenizer, "a red square 0") in [
        s["input_ids"][1:-1][s["attention_mask"][1:-1].bool()][:-1].tolist() for s in samples
    ]


def test_video_text_pairs(tmp_path, tokenizer):
    frames = [torch.full((24, 24, 3), 20 * i, dtype=torch.uint8).numpy() for i in range(5)]
    short = write_video(frames, fps=1.0)  # 5 s at 1 fps: shorter than T=8, stretched
    long = write_video(frames * 3, fps=2.0)  # 7.5 s
    records = [
        {"__key__": "short", "mp4": short, "txt": "the square gets brighter"},
        {"__key__": "long", "mp4": long, "txt": "it flickers"},
        {"__key__": "broken", "mp4": short[: len(short) // 3], "txt": "x"},
        {"__key__": "noise", "webm": os.urandom(2000), "txt": "x"},
    ]
    shard = write_shard(tmp_path / "videos.tar", records)
    samples, skipped = epoch(VideoTextDataset(shard, tokenizer, transform, num_frames=8))
    assert len(samples) == 2 and skipped == {"undecodable_video": 2}
    for s in samples:
        assert s["pixel_values"].shape == (1, 8, 3, 16, 16)
    short_sample = next(
        s for s in samples if s["input_ids"][1:4].tolist() == tokenize_plain(tokenizer, "the square gets brighter")[:3]
    )
    brightness = short_sample["pixel_values"][0, :, 0].mean(dim=(1, 2))  # (t,)
    assert torch.all(brightness[1:] >= brightness[:-1] - 1e-3)  # frames in time order
    assert brightness[-1] > brightness[0]


def test_truncated_shard_is_skipped_without_half_records(tmp_path, tokenizer):
    records = [{"__key__": f"r{i}", "jpg": noisy_jpeg(i), "txt": f"caption {i}"} for i in range(6)]
    good = write_shard(tmp_path / "a.tar", records)
    data = open(write_shard(tmp_path / "b.tar", records), "rb").read()
    cut = data.index(b"r3.jpg") + 512 + 300  # inside the image data of record r3
    (tmp_path / "b.tar").write_bytes(data[:cut])
    counts = SkipCounts()
    # the error strikes before r3's name is seen, so r2 (the record being assembled) cannot be known
    # complete and is dropped too: never a half record
    assert [r["__key__"] for r in read_shard(str(tmp_path / "b.tar"), counts)] == ["r0", "r1"]
    assert counts == {"truncated_shard": 1}
    samples, skipped = epoch(ImageTextDataset([good, str(tmp_path / "b.tar")], tokenizer, transform))
    assert len(samples) == 6 + 2 and skipped["truncated_shard"] >= 1


def test_tokenizer_without_flamingo_tokens_is_rejected(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    shard = write_shard(tmp_path / "x.tar", [{"__key__": "a", "png": image_bytes(), "txt": "x"}])
    with pytest.raises(ValueError, match="add_flamingo_tokens"):
        ImageTextDataset(shard, AutoTokenizer.from_pretrained(tokenizer_dir), transform)


def test_a_key_written_twice_gives_two_records_and_unnamed_members_are_counted(tmp_path):
    """Fuzz campaign: the second record of a repeated key silently replaced the first one's files, and members
    without a ``key.ext`` name vanished uncounted."""
    import io
    import tarfile

    members = [("a.jpg", b"1"), ("a.txt", b"first"), ("a.jpg", b"2"), ("a.txt", b"second"), ("README", b"x")]
    members += [("b.jpg", b"3"), ("b.TXT", b"third")]
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    counts = SkipCounts()
    records = list(read_shard(str(tmp_path / "s.tar"), counts))
    assert [(r["__key__"], r["jpg"], r["txt"]) for r in records] == [
        ("a", b"1", b"first"),
        ("a", b"2", b"second"),
        ("b", b"3", b"third"),
    ]
    assert counts == {"unnamed_member": 1}


def test_caption_fields_that_are_not_text_are_skipped():
    """Fuzz campaign: a caption given as a list or an object was trained on as its Python repr."""
    from flamingo_vlm.data.skips import BadSample
    from flamingo_vlm.data.text import decode_text

    assert decode_text(b'{"caption": " a  red square "}', "json") == "a red square"
    for data in (b'{"caption": ["a", "b"]}', b'{"caption": {"en": "a"}}', b'{"caption": true}', b'{"title": "a"}'):
        with pytest.raises(BadSample) as err:
            decode_text(data, "json")
        assert err.value.reason == "bad_caption_json"
