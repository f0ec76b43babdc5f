"""``import-mmc4`` on MMC4-format jsonl written here: alignment, image sources, and every bad-record kind."""

import base64
import gzip
import json
import os
import tarfile

import pytest
from data_fixtures import image_bytes, noisy_jpeg, transform, write_shard

from flamingo_vlm.cli import main
from flamingo_vlm.data import Document, ImageItem, InterleavedDataset, Slot
from flamingo_vlm.data.mmc4 import import_mmc4
from flamingo_vlm.data.sharding import ShardPlan
from flamingo_vlm.data.shards import read_shard
from flamingo_vlm.data.skips import SkipCounts
from flamingo_vlm.tokenization import MEDIA_TOKEN

RED, GREEN, BLUE, GREY, CYAN = (255, 0, 0), (0, 255, 0), (0, 0, 255), (90, 90, 90), (10, 200, 200)
SENTENCES = ["First sentence.", "Second sentence.", "Third sentence."]


def image_entry(name, index, sim=0.3, **extra):
    """An ``image_info`` entry as MMC4 writes it (face_detections, raw_url and all)."""
    return {
        "image_name": name,
        "raw_url": f"http://example.com/{name}",
        "matched_text_index": index,
        "matched_sim": sim,
        "face_detections": None,
        **extra,
    }


def mmc4_doc(images, sentences=SENTENCES, url="http://example.com/page"):
    return {
        "text_list": sentences,
        "image_info": images,
        "similarity_matrix": [[0.2] * len(sentences) for _ in images],
        "url": url,
        "could_have_url_duplicate": 0,
    }


def make_mmc4(root):
    """Two document files (plain and gzipped jsonl), their images in a folder (MMC4's download layout), a tar
    image shard and embedded base64; one document per bad-record kind. Returns (inputs, image sources)."""
    folder = root / "images"
    (folder / "docs_shard_0_images").mkdir(parents=True)
    (folder / "docs_shard_0_images" / "red.png").write_bytes(image_bytes(color=RED))
    (folder / "garbage.jpg").write_bytes(b"not a picture")  # directly in the folder: found for any file
    (root / "secret.png").write_bytes(image_bytes(color=GREY))
    write_shard(root / "images-000.tar", [{"__key__": "blue", "jpg": image_bytes(color=BLUE, fmt="JPEG")}])
    # img2dataset's layout: images named by key, the URL in a sidecar; found through raw_url
    (folder / "00000").mkdir()
    (folder / "00000" / "000000007.png").write_bytes(image_bytes(color=CYAN))
    (folder / "00000" / "000000007.json").write_text(json.dumps({"url": "http://example.com/grey.png"}))
    green = base64.b64encode(image_bytes(color=GREEN)).decode()
    garbage = base64.b64encode(b"\x89PNG but not really").decode()
    first = [
        # images before their sentences: [red, green] s0 s1 [blue] s2
        mmc4_doc(
            [image_entry("blue.jpg", 2), image_entry("red.png", 0), image_entry("g", 0, image_base64=f"b'{green}'")]
        ),
        # one image missing; one found by its raw_url
        mmc4_doc([image_entry("red.png", 1), image_entry("nowhere.png", 0), image_entry("grey.png", 2)]),
        "{not json",
        mmc4_doc([image_entry("red.png", 0)], sentences="not a list"),
        mmc4_doc([image_entry("red.png", 7), image_entry("red.png", -1), image_entry("red.png", True)]),
    ]
    second = [
        mmc4_doc([image_entry("x", 0, image_base64=garbage), image_entry("garbage.jpg", 1)]),
        mmc4_doc([image_entry("../secret.png", 0), image_entry(str(root / "secret.png"), 1)]),
        [1, 2, 3],
        mmc4_doc([image_entry("red.png", 0)], sentences=["   "]),
    ]
    lines = [json.dumps(d) if not isinstance(d, str) else d for d in first]
    (root / "docs_shard_0.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(root / "docs_shard_1.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(d) for d in second) + "\n")
    return [root / "docs_shard_0.jsonl", root / "docs_shard_1.jsonl.gz"], [folder, root / "images-000.tar"]


def documents(shards):
    skipped = SkipCounts()
    out = []
    for shard in shards:
        for record in read_shard(shard, skipped):
            out.append((record, Document.from_json(record["json"])))
    assert not skipped
    return out


def layout(document):
    return [f"<{i.src}>" if isinstance(i, ImageItem) else i.text for i in document.items]


def test_import_mmc4_places_images_by_matched_sentence_and_counts_every_bad_record(tmp_path, tokenizer):
    inputs, images = make_mmc4(tmp_path)
    report = import_mmc4(inputs, tmp_path / "out", images=images, plan=ShardPlan(per_shard=4), progress=False)

    assert report.pages_kept == 2
    assert report.pages_skipped == {
        "bad_json": 1,
        "bad_text_list": 1,
        "bad_document": 1,
        "no_images": 3,  # all images out of range; all images broken; all images outside their folder
        "no_text": 1,
    }
    assert report.pages_kept + sum(report.pages_skipped.values()) == 9
    assert report.images_skipped == {
        "missing_image": 1,
        "bad_matched_text_index": 3,
        "undecodable_image": 2,
        "image_outside_root": 2,
    }
    (first, doc), (second, doc2) = documents(report.shards)
    assert layout(doc) == ["<0.png>", "<1.png>", "First sentence. Second sentence.", "<2.jpg>", "Third sentence."]
    assert first["0.png"] == image_bytes(color=RED)  # bytes stored unchanged, from the folder
    assert first["1.png"] == image_bytes(color=GREEN)  # embedded, OpenFlamingo's "b'...'" form
    assert first["2.jpg"] == image_bytes(color=BLUE, fmt="JPEG")  # from the tar image shard
    assert doc.url == "http://example.com/page" and first["__key__"] == "doc0000000000"
    assert layout(doc2) == ["First sentence.", "<0.png>", "Second sentence.", "<1.png>", "Third sentence."]
    assert second["1.png"] == image_bytes(color=CYAN)
    assert second["__key__"] == "doc0000000001"
    # shard 0 holds documents 0-3, shard 1 documents 4-7 (none usable: not written), shard 2 document 8 (none)
    assert [os.path.basename(s) for s in report.shards] == ["mmc4-000000.tar"]

    assert all(image_bytes(color=GREY) not in open(s, "rb").read() for s in report.shards)  # the secret

    stream = InterleavedDataset(report.shards, tokenizer, transform).samples(Slot())
    sample = next(stream)
    media = int((sample["input_ids"] == tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)).sum())
    assert media == sample["pixel_values"].shape[0] >= 1


def test_import_mmc4_after_puts_each_image_after_its_sentence(tmp_path):
    inputs, images = make_mmc4(tmp_path)
    report = import_mmc4(inputs[:1], tmp_path / "out", images=images, image_position="after", progress=False)
    (_, doc), (_, doc2) = documents(report.shards)
    assert layout(doc) == ["First sentence.", "<0.png>", "<1.png>", "Second sentence. Third sentence.", "<2.jpg>"]
    # the missing image after "First sentence." still separates it from the next sentence: the same chunk anyway
    assert layout(doc2) == ["First sentence.", "Second sentence.", "<0.png>", "Third sentence.", "<1.png>"]


def test_import_mmc4_min_similarity_drops_weakly_matched_images(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(image_bytes(color=RED))
    (tmp_path / "img" / "b.png").write_bytes(noisy_jpeg(1))
    doc = mmc4_doc([image_entry("a.png", 0, sim=0.1), image_entry("b.png", 1, sim=0.5)])
    (tmp_path / "d.jsonl").write_text(json.dumps(doc) + "\n")
    report = import_mmc4(
        [tmp_path / "d.jsonl"], tmp_path / "out", [tmp_path / "img"], min_similarity=0.2, progress=False
    )
    assert report.images_kept == 1 and report.images_skipped == {"low_similarity": 1}


def test_cli_import_mmc4_output_is_the_same_for_any_split(tmp_path, capsys):
    """--workers and --shard-index/--num-shards change who writes a shard, never its name or bytes."""
    inputs, images = make_mmc4(tmp_path)
    # more usable documents, so that there are several shards
    lines = [json.dumps(mmc4_doc([image_entry("red.png", i % 3)], url=f"u{i}")) for i in range(7)]
    (tmp_path / "docs_shard_0.jsonl").write_text((tmp_path / "docs_shard_0.jsonl").read_text() + "\n".join(lines))
    base = ["data", "import-mmc4", *map(str, inputs), "--docs-per-shard", "3", "--no-progress"]
    base += [a for i in images for a in ("--images", str(i))]

    def shards(out):
        return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}

    assert main([*base, "-o", str(tmp_path / "one")]) == 0
    assert "documents: kept 9, skipped 7" in capsys.readouterr().out
    reference = shards(tmp_path / "one")
    assert len(reference) == 4 and all(name.endswith(".tar") for name in reference)
    assert main([*base, "-o", str(tmp_path / "workers"), "--workers", "2"]) == 0
    assert shards(tmp_path / "workers") == reference
    parts = {}
    for i in range(3):
        main([*base, "-o", str(tmp_path / f"part{i}"), "--shard-index", str(i), "--num-shards", "3"])
        part = shards(tmp_path / f"part{i}")
        assert not set(part) & set(parts)  # non-overlapping
        parts.update(part)
    assert parts == reference
    with tarfile.open(tmp_path / "one" / "mmc4-000000.tar") as tar:
        assert all(m.mtime == 0 for m in tar.getmembers())


def test_import_mmc4_refuses_bad_options(tmp_path, capsys):
    with pytest.raises(ValueError, match="image_position"):
        import_mmc4([], tmp_path, image_position="middle")
    with pytest.raises(ValueError, match="shard-index"):
        ShardPlan(shard_index=3, num_shards=3)
    (tmp_path / "d.jsonl").write_text("")
    argv = ["data", "import-mmc4", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, "--shard-index", "3", "--num-shards", "3"]) == 2
    assert main([*argv, "--images", str(tmp_path / "nowhere")]) == 2
    assert "neither a folder nor a .tar" in capsys.readouterr().err
