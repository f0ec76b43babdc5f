"""``import-obelics`` on parquet written by pyarrow in OBELICS' layout: order kept, image kinds, bad rows."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_fixtures import image_bytes, transform, write_shard

from flamingo_vlm.cli import main
from flamingo_vlm.data import Document, ImageItem, InterleavedDataset, Slot
from flamingo_vlm.data.obelics import import_obelics
from flamingo_vlm.data.sharding import ShardPlan
from flamingo_vlm.data.shards import read_shard
from flamingo_vlm.data.skips import SkipCounts

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)

# The published dataset's schema: images are URLs, metadata are JSON strings.
URL_SCHEMA = pa.schema(
    [
        ("images", pa.list_(pa.string())),
        ("metadata", pa.string()),
        ("general_metadata", pa.string()),
        ("texts", pa.list_(pa.string())),
    ]
)
# A datasets `Sequence(Image())` column as `datasets` writes it: a struct of bytes and path per image.
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def url_row(texts, images, url="http://example.com/doc"):
    return {
        "images": images,
        "metadata": json.dumps([None if i is None else {"src": i} for i in images]),
        "general_metadata": json.dumps({"url": url, "warc_filename": "x.warc.gz"}),
        "texts": texts,
    }


def make_obelics(root):
    """A URL-layout file (images downloaded by img2dataset into a folder and a tar) and an embedded-bytes file,
    written with small row groups; one row per bad kind. Returns (parquet files, image sources)."""
    folder = root / "downloaded" / "00000"
    folder.mkdir(parents=True)
    (folder / "000000000.png").write_bytes(image_bytes(color=RED))
    (folder / "000000000.json").write_text(json.dumps({"url": "http://img.example/red.png", "status": "success"}))
    tar = write_shard(
        root / "00001.tar",
        [{"__key__": "000010000", "jpg": image_bytes(color=BLUE, fmt="JPEG"), "json": {"url": "http://img.example/b"}}],
    )
    rows = [
        url_row(
            ["A red one:", None, "and a blue one:", None, "the end."],
            [None, "http://img.example/red.png", None, "http://img.example/b", None],
        ),
        url_row(["text", None], [None, "http://img.example/never-downloaded.png"]),  # image missing
        url_row(["one", "two"], [None]),  # lists of different lengths
        url_row(["both", None], ["http://img.example/red.png", "http://img.example/b"]),  # a position with both
        url_row([None, "neither"], [None, "http://img.example/b"]),  # a position with neither
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=URL_SCHEMA), root / "urls.parquet", row_group_size=2)
    struct_rows = [
        {"texts": [None, "green, embedded"], "images": [{"bytes": image_bytes(color=GREEN), "path": "g.png"}, None]},
        {"texts": ["broken bytes", None], "images": [None, {"bytes": b"\x89PNG garbage", "path": None}]},
    ]
    schema = pa.schema([("texts", pa.list_(pa.string())), ("images", pa.list_(IMAGE_STRUCT))])
    pq.write_table(pa.Table.from_pylist(struct_rows, schema=schema), root / "embedded.parquet")
    return [root / "urls.parquet", root / "embedded.parquet"], [root / "downloaded", tar]


def documents(shards):
    skipped = SkipCounts()
    out = [(r, Document.from_json(r["json"])) for s in shards for r in read_shard(s, skipped)]
    assert not skipped
    return out


def test_import_obelics_keeps_row_order_and_counts_every_bad_row(tmp_path, tokenizer):
    inputs, images = make_obelics(tmp_path)
    report = import_obelics(inputs, tmp_path / "out", images=images, plan=ShardPlan(per_shard=3), progress=False)

    assert report.pages_kept == 2 and report.images_kept == 3
    assert report.pages_skipped == {"misaligned_texts_images": 3, "no_images": 2}
    assert report.images_skipped == {"missing_image": 1, "undecodable_image": 1}
    (first, doc), (second, doc2) = documents(report.shards)
    items = [f"<{i.src}>" if isinstance(i, ImageItem) else i.text for i in doc.items]
    assert items == ["A red one:", "<0.png>", "and a blue one:", "<1.jpg>", "the end."]
    assert first["0.png"] == image_bytes(color=RED) and first["1.jpg"] == image_bytes(color=BLUE, fmt="JPEG")
    assert doc.url == "http://example.com/doc" and first["__key__"] == "doc0000000000"
    assert [type(i).__name__ for i in doc2.items] == ["ImageItem", "TextItem"] and second["0.png"] == image_bytes(
        color=GREEN
    )
    assert second["__key__"] == "doc0000000005"  # the first row of the second file: numbering spans files
    # rows 0-2 -> shard 0, rows 3-5 -> shard 1 (row 5 is the embedded one), row 6 -> nothing usable
    assert [os.path.basename(s) for s in report.shards] == ["obelics-000000.tar", "obelics-000001.tar"]
    next(InterleavedDataset(report.shards, tokenizer, transform).samples(Slot()))


def test_import_obelics_refuses_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 truncated download")
    with pytest.raises(ValueError, match="broken.parquet"):
        import_obelics([tmp_path / "broken.parquet"], tmp_path / "out", progress=False)


def test_cli_import_obelics_workers_give_the_same_shards(tmp_path, capsys):
    inputs, images = make_obelics(tmp_path)
    args = ["data", "import-obelics", *map(str, inputs), "--docs-per-shard", "1", "--no-progress"]
    args += [a for i in images for a in ("--images", str(i))]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert "documents: kept 2, skipped 5" in capsys.readouterr().out
    assert main([*args, "-o", str(tmp_path / "b"), "--workers", "2"]) == 0
    a, b = (sorted(os.listdir(tmp_path / d)) for d in "ab")
    assert a == b == ["obelics-000000.tar", "obelics-000005.tar"]
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in a)
