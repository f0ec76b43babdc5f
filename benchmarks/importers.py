"""Importer throughput: input records (documents, rows, pages) per second for MMC4, OBELICS and WARC inputs.

Synthetic inputs in each real format are written to a temporary directory — MMC4 jsonl with its images in a
download folder, OBELICS parquet (pyarrow) with embedded image bytes, and a gzipped WARC (warcio) whose pages
use image responses in the same file — and converted by the real importers with each ``--workers`` count.
Every document has ``--images-per-doc`` distinct JPEGs of ``--image-size`` px, drawn from a pool; every image
is fully decoded once by the importer (the paper's size filters need the true size), which dominates the cost.

    python benchmarks/importers.py [--docs 400] [--images-per-doc 4] [--image-size 256] [--workers 1 2] [--repeats 3]

Records/s counts input records (kept or skipped; here all are kept), images/s the images written.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import _jpeg, _text  # noqa: E402

from flamingo_vlm.data.build import build_web_shards  # noqa: E402
from flamingo_vlm.data.mmc4 import import_mmc4  # noqa: E402
from flamingo_vlm.data.obelics import import_obelics  # noqa: E402
from flamingo_vlm.data.sharding import ShardPlan  # noqa: E402


def _picks(rng: np.random.Generator, pool: int, docs: int, per_doc: int) -> list[list[int]]:
    return [list(rng.choice(pool, per_doc, replace=False)) for _ in range(docs)]


def write_mmc4(root: Path, images: list[bytes], picks: list[list[int]], rng: np.random.Generator) -> Path:
    """``docs.jsonl`` (MMC4 fields) and ``images/docs_images/NAME`` (MMC4's download layout)."""
    folder = root / "images" / "docs_images"
    folder.mkdir(parents=True)
    for i, data in enumerate(images):
        (folder / f"{i:012x}.jpg").write_bytes(data)
    with open(root / "docs.jsonl", "w") as f:
        for doc, chosen in enumerate(picks):
            sentences = [_text(rng, 20) + "." for _ in range(2 * len(chosen))]
            info = [
                {"image_name": f"{k:012x}.jpg", "raw_url": f"http://x/{k}", "matched_text_index": 2 * j,
                 "matched_sim": 0.3, "face_detections": None}
                for j, k in enumerate(chosen)
            ]  # fmt: skip
            f.write(json.dumps({"text_list": sentences, "image_info": info, "url": f"http://x/{doc}"}) + "\n")
    return root / "docs.jsonl"


def write_obelics(root: Path, images: list[bytes], picks: list[list[int]], rng: np.random.Generator) -> Path:
    """``docs.parquet``: texts and images (datasets ``Image`` structs with bytes) aligned, None in each gap."""
    rows = []
    for chosen in picks:
        texts, imgs = [], []
        for k in chosen:
            texts += [_text(rng, 40), None]
            imgs += [None, {"bytes": images[k], "path": f"{k}.jpg"}]
        rows.append({"texts": texts, "images": imgs, "general_metadata": json.dumps({"url": "http://x"})})
    schema = pa.schema(
        [
            ("texts", pa.list_(pa.string())),
            ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
            ("general_metadata", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "docs.parquet", row_group_size=100)
    return root / "docs.parquet"


def write_warc(root: Path, images: list[bytes], picks: list[list[int]], rng: np.random.Generator) -> Path:
    """``crawl.warc.gz``: every image as a response, then one HTML response per page (relative ``src``)."""

    def response(writer: WARCWriter, url: str, content_type: str, body: bytes) -> None:
        headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.0")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers))

    with open(root / "crawl.warc.gz", "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for k, data in enumerate(images):
            response(writer, f"http://site.example/img/{k}.jpg", "image/jpeg", data)
        for page, chosen in enumerate(picks):
            body = "".join(f"<p>{_text(rng, 40)}</p><img src='../img/{k}.jpg'>" for k in chosen)
            response(
                writer, f"http://site.example/p/{page}.html", "text/html", f"<html><body>{body}</body></html>".encode()
            )
    return root / "crawl.warc.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--images-per-doc", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--pool", type=int, default=64, help="distinct images the documents draw from")
    parser.add_argument("--per-shard", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest is reported")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = [_jpeg(rng, args.image_size) for _ in range(args.pool)]
    picks = _picks(rng, args.pool, args.docs, args.images_per_doc)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = {}
        for name, write in (("mmc4", write_mmc4), ("obelics", write_obelics), ("warc", write_warc)):
            (root / name).mkdir()
            inputs[name] = write(root / name, images, picks, rng)
        runs = {
            "mmc4": lambda out, plan: import_mmc4(
                [inputs["mmc4"]], out, [root / "mmc4" / "images"], plan=plan, progress=False
            ),
            "obelics": lambda out, plan: import_obelics([inputs["obelics"]], out, plan=plan, progress=False),
            "warc": lambda out, plan: build_web_shards(
                [], out, warcs=[inputs["warc"]], pages_per_shard=plan.per_shard, plan=plan, progress=False
            ),
        }  # fmt: skip
        print(
            f"{args.docs} documents x {args.images_per_doc} images of {args.image_size} px (JPEG), "
            f"{args.per_shard} per shard, {os.cpu_count()} CPUs, best of {args.repeats}"
        )
        print(f"{'format':<8} {'workers':>7} {'records/s':>10} {'images/s':>9} {'kept':>5} {'seconds':>8}")
        for name, run in runs.items():
            for workers in args.workers:
                seconds = float("inf")
                for repeat in range(args.repeats):  # best of N: on a shared machine the others only add noise
                    start = time.perf_counter()
                    report = run(root / "out" / f"{name}-{workers}-{repeat}", ShardPlan(args.per_shard, workers))
                    seconds = min(seconds, time.perf_counter() - start)
                print(
                    f"{name:<8} {workers:>7} {args.docs / seconds:>10.1f} {report.images_kept / seconds:>9.1f} "
                    f"{report.pages_kept:>5} {seconds:>8.2f}"
                )
                assert report.pages_kept == args.docs, report.summary()


if __name__ == "__main__":
    main()
