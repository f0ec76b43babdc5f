"""``flamingo data import-obelics``: OBELICS rows (Hugging Face datasets parquet) → interleaved document shards.

An OBELICS row (https://huggingface.co/datasets/HuggingFaceM4/OBELICS#data-fields) is one web document as two
aligned lists, ``texts`` and ``images``, of the same length: position ``i`` holds either a text (and ``None`` in
``images``) or an image (and ``None`` in ``texts``), in page order; ``general_metadata`` is a JSON string with the
page ``url``. The order is kept as is. An image is given as

- a URL string (the published dataset): resolved to a downloaded file through img2dataset sidecars in the
  image folders or tar shards (:mod:`flamingo_vlm.data.image_store`); never fetched;
- any other string: a file name looked up in the image folders or shards;
- bytes, or a datasets ``Image`` struct ``{"bytes": ..., "path": ...}`` (bytes first, else ``path`` as a name).

A row whose lists differ in length, or with a position holding both or neither, is skipped as malformed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from flamingo_vlm.data.build import find_inputs
from flamingo_vlm.data.document import ImageItem, TextItem
from flamingo_vlm.data.html import ImageFilter
from flamingo_vlm.data.image_store import ImageStore
from flamingo_vlm.data.packing import PendingImage, pack_document
from flamingo_vlm.data.sharding import BuildReport, Record, ShardPlan, counted, file_ranges, write_shards
from flamingo_vlm.data.skips import BadSample, SkipCounts
from flamingo_vlm.io import loads_json

COLUMNS = ("texts", "images", "general_metadata")


def _image(value: object, store: ImageStore) -> PendingImage:
    """How to load one ``images`` entry; raises BadSample for an entry of no known kind."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, bytes) and data:
            return PendingImage(ImageItem(src=path if isinstance(path, str) else "bytes"), lambda: data)
        value = path
    if isinstance(value, bytes):
        return PendingImage(ImageItem(src="bytes"), lambda: value)
    if isinstance(value, str) and value:
        if urlparse(value).scheme in ("http", "https"):
            return PendingImage(ImageItem(src=value), lambda: store.by_url(value))
        return PendingImage(ImageItem(src=value), lambda: store.by_name(value))
    raise BadSample("bad_image_entry", f"{type(value).__name__} {value!r:.40}")


def row_items(row: dict, store: ImageStore) -> tuple[str, list[TextItem | PendingImage]]:
    """``(url, items)`` of one OBELICS row, in the row's order; BadSample if the two lists do not align."""
    texts, images = row.get("texts"), row.get("images")
    if not isinstance(texts, list) or not isinstance(images, list):
        raise BadSample("bad_row", "texts and images must both be lists")
    if len(texts) != len(images):
        raise BadSample("misaligned_texts_images", f"{len(texts)} texts, {len(images)} images")
    items: list[TextItem | PendingImage] = []
    for i, (text, image) in enumerate(zip(texts, images, strict=True)):
        if (text is None) == (image is None):
            raise BadSample(
                "misaligned_texts_images", f"position {i} holds {'both' if text is not None else 'neither'}"
            )
        if image is None:
            if not isinstance(text, str):
                raise BadSample("bad_row", f"text at {i} is a {type(text).__name__}")
            if text.strip():
                items.append(TextItem(text))
        else:
            items.append(_image(image, store))
    url = ""
    if isinstance(meta := row.get("general_metadata"), str):
        try:
            parsed = loads_json(meta, "general_metadata")
            url = parsed.get("url", "") if isinstance(parsed, dict) else ""
        except ValueError:
            pass  # the url is informative only
    return url if isinstance(url, str) else "", items


def count_rows(path: str) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"cannot read OBELICS parquet {path}: {e}") from e


@dataclass
class ObelicsSource:
    """The rows of OBELICS parquet files, numbered in file then row order."""

    files: list[str]
    counts: list[int]
    store: ImageStore
    image_filter: ImageFilter
    max_images: int = 100

    def __len__(self) -> int:
        return sum(self.counts)

    def records(self, start: int, stop: int, report: BuildReport) -> Iterator[Record]:
        for number, first, last, base in file_ranges(self.counts, start, stop):
            path = self.files[number]
            for offset, rows in self._rows(path, first, last, report):
                for i, row in enumerate(rows):
                    record = counted(report, f"{path}:{offset + i}", self._record, path, row, base + offset + i)
                    if record is not None:
                        yield record

    def _record(self, path: str, row: dict, index: int, images_skipped: SkipCounts) -> tuple[Record, int]:
        url, items = row_items(row, self.store)
        return pack_document(f"doc{index:010d}", url, items, self.image_filter, self.max_images, images_skipped, path)

    def _rows(self, path: str, first: int, last: int, report: BuildReport) -> Iterator[tuple[int, list[dict]]]:
        """``(local index of the first row, rows)`` per row group overlapping ``[first, last)``."""
        parquet = pq.ParquetFile(path)
        columns = [c for c in COLUMNS if c in parquet.schema_arrow.names]
        group_start = 0
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            lo, hi = max(first, group_start), min(last, group_start + size)
            if lo < hi:
                try:
                    table = parquet.read_row_group(group, columns=columns)
                except (pa.ArrowException, OSError) as e:
                    for _ in range(hi - lo):
                        report.pages_skipped.skip("unreadable_row_group", str(e)[:200], path)
                else:
                    yield lo, table.slice(lo - group_start, hi - lo).to_pylist()
            group_start += size


def import_obelics(
    inputs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike] = (),
    prefix: str = "obelics",
    plan: ShardPlan | None = None,
    image_filter: ImageFilter | None = None,
    max_images: int = 100,
    progress: bool = True,
) -> BuildReport:
    """Convert OBELICS parquet files into ``{output_dir}/{prefix}-%06d.tar`` (``plan.per_shard`` rows each)."""
    files = find_inputs(inputs, (".parquet",))
    source = ObelicsSource(
        files, [count_rows(f) for f in files], ImageStore.open(images), image_filter or ImageFilter(), max_images
    )
    return write_shards(source, output_dir, prefix, plan or ShardPlan(), progress, unit="documents")
