"""``flamingo data import-mmc4``: Multimodal C4 documents → the project's interleaved document shards.

MMC4 (https://github.com/allenai/mmc4#documents) ships one JSON document per line (``.jsonl``, or the
distributed ``.jsonl.zip``/``.jsonl.gz``): ``text_list`` (the page's sentences) and ``image_info``, a list of
images each with ``image_name``, ``raw_url``, ``matched_text_index`` (the sentence it was assigned to by a
bipartite matching on CLIP similarity) and ``matched_sim``. The images are not in the documents: they are read
from downloaded folders or tar shards (:mod:`flamingo_vlm.data.image_store`), or from ``image_base64`` inside
the image entry (OpenFlamingo's ``convert_mmc4_to_wds.py`` embeds them so). An image not found by name is
looked up by ``raw_url`` among img2dataset downloads (``KEY.json`` sidecars); ``raw_url`` is never fetched.

Alignment. MMC4 keeps no image position on the page, only the matched sentence. OpenFlamingo's MMC4 loader puts
each image *right before* its matched sentence (``<|endofchunk|><image>{sentence}``), so that the sentence is
the text the image conditions; that is the default here (``image_position="before"``). ``"after"`` puts it right
after the sentence instead (the sentence then conditions on the previous image, and the sampler's ``p_next``
flip ties it to this one). Images matched to the same sentence keep their ``image_info`` order. Sentences
between two images are joined with a space into one text item (the sampler joins a chunk's texts so anyway).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import itertools
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from flamingo_vlm.data.build import find_inputs
from flamingo_vlm.data.document import ImageItem, TextItem
from flamingo_vlm.data.html import ImageFilter
from flamingo_vlm.data.image_store import ImageStore
from flamingo_vlm.data.packing import PendingImage, pack_document
from flamingo_vlm.data.sharding import BuildReport, Record, ShardPlan, counted, file_ranges, write_shards
from flamingo_vlm.data.skips import BadSample, SkipCounts
from flamingo_vlm.io import loads_json

IMAGE_POSITIONS = ("before", "after")
MMC4_EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.zip")


@contextlib.contextmanager
def _open_lines(path: str) -> Iterator[IO[bytes]]:
    """The document lines of a ``.jsonl``, ``.jsonl.gz`` or ``.jsonl.zip`` (its first ``.jsonl`` member)."""
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".jsonl")] or archive.namelist()[:1]
            if not names:
                raise ValueError(f"{path} holds no .jsonl file")
            with archive.open(names[0]) as f:
                yield f
    else:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
            yield f


def count_lines(path: str) -> int:
    try:
        with _open_lines(path) as f:
            return sum(1 for _ in f)
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read MMC4 documents {path}: {e}") from e


def _embedded(value: str) -> bytes:
    """Bytes of an ``image_base64`` entry; OpenFlamingo's converter stores ``str(bytes)``, i.e. ``"b'...'"``."""
    if value.startswith(("b'", 'b"')) and value.endswith(value[1]):
        value = value[2:-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadSample("undecodable_image", f"image_base64: {e}") from e


def _stored(store: ImageStore, name: str, raw_url: str | None, subfolders: Sequence[str]) -> bytes:
    """An image by ``image_name``, else by ``raw_url`` among img2dataset downloads (never fetched)."""
    try:
        return store.by_name(name, subfolders)
    except BadSample as e:
        if e.reason != "missing_image" or raw_url is None:
            raise
        return store.by_url(raw_url)


def document_items(
    doc: object,
    store: ImageStore,
    subfolders: Sequence[str],
    position: str,
    min_similarity: float | None,
    images_skipped: SkipCounts,
) -> tuple[str, list[TextItem | PendingImage]]:
    """``(url, items)`` of one parsed MMC4 document, images placed by ``matched_text_index``.

    A document that is not an object, or whose ``text_list``/``image_info`` is malformed, is a BadSample; a
    malformed or filtered image entry is a counted image skip.
    """
    if not isinstance(doc, dict):
        raise BadSample("bad_document", f"a {type(doc).__name__}, not an object")
    sentences = doc.get("text_list")
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise BadSample("bad_text_list", "text_list must be a list of strings")
    infos = doc.get("image_info")
    if not isinstance(infos, list):
        raise BadSample("bad_image_info", "image_info must be a list")
    placed: dict[int, list[PendingImage]] = {}
    for info in infos:
        if not isinstance(info, dict):
            images_skipped.skip("bad_image_entry", repr(info)[:80])
            continue
        index, name = info.get("matched_text_index"), info.get("image_name")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(sentences):
            images_skipped.skip("bad_matched_text_index", f"{index!r:.40} for {len(sentences)} sentences")
            continue
        embedded = info.get("image_base64")
        if not isinstance(name, str) and not isinstance(embedded, str):
            images_skipped.skip("bad_image_entry", "no image_name or image_base64")
            continue
        sim = info.get("matched_sim")
        if min_similarity is not None and isinstance(sim, (int, float)) and sim < min_similarity:
            images_skipped.skip("low_similarity", f"{sim:.3f} < {min_similarity}")
            continue
        raw_url = info.get("raw_url")
        load = (
            (lambda e=embedded: _embedded(e))
            if isinstance(embedded, str)
            else (lambda n=name, u=raw_url: _stored(store, n, u if isinstance(u, str) else None, subfolders))
        )
        item = ImageItem(src=name if isinstance(name, str) else "image_base64")
        placed.setdefault(index, []).append(PendingImage(item, load))
    items: list[TextItem | PendingImage] = []
    run: list[str] = []
    for i, sentence in enumerate(sentences):
        images = placed.get(i, [])
        if position == "after":
            run.append(sentence)
        if images:
            if run:
                items.append(TextItem(" ".join(run)))
                run = []
            items.extend(images)
        if position == "before":
            run.append(sentence)
    if run:
        items.append(TextItem(" ".join(run)))
    url = doc.get("url")
    return url if isinstance(url, str) else "", items


@dataclass
class Mmc4Source:
    """The documents of MMC4 jsonl files, numbered in file then line order."""

    files: list[str]
    counts: list[int]
    store: ImageStore
    image_filter: ImageFilter
    max_images: int = 100
    position: str = "before"
    min_similarity: float | None = None

    def __len__(self) -> int:
        return sum(self.counts)

    def records(self, start: int, stop: int, report: BuildReport) -> Iterator[Record]:
        for number, first, last, base in file_ranges(self.counts, start, stop):
            path = self.files[number]
            with _open_lines(path) as lines:
                for line_no, line in enumerate(itertools.islice(lines, first, last), start=first):
                    record = counted(report, f"{path}:{line_no + 1}", self._record, path, line, base + line_no)
                    if record is not None:
                        yield record

    def _record(self, path: str, line: bytes, index: int, images_skipped: SkipCounts) -> tuple[Record, int]:
        try:
            doc = loads_json(line, path)
        except ValueError as e:
            raise BadSample("bad_json", str(e)[:200]) from e
        stem = os.path.basename(path).split(".")[0]
        url, items = document_items(
            doc, self.store, (f"{stem}_images", stem), self.position, self.min_similarity, images_skipped
        )
        return pack_document(f"doc{index:010d}", url, items, self.image_filter, self.max_images, images_skipped, path)


def import_mmc4(
    inputs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike] = (),
    prefix: str = "mmc4",
    plan: ShardPlan | None = None,
    image_position: str = "before",
    min_similarity: float | None = None,
    image_filter: ImageFilter | None = None,
    max_images: int = 100,
    progress: bool = True,
) -> BuildReport:
    """Convert MMC4 document files into ``{output_dir}/{prefix}-%06d.tar`` (``plan.per_shard`` documents each)."""
    if image_position not in IMAGE_POSITIONS:
        raise ValueError(f"image_position must be one of {IMAGE_POSITIONS}, got {image_position!r}")
    files = find_inputs(inputs, MMC4_EXTENSIONS)
    source = Mmc4Source(
        files,
        [count_lines(f) for f in files],
        ImageStore.open(images),
        image_filter or ImageFilter(),
        max_images,
        image_position,
        min_similarity,
    )
    return write_shards(source, output_dir, prefix, plan or ShardPlan(), progress, unit="documents")
