"""One document → one shard record: the step every input format shares (HTML pages, WARC, MMC4, OBELICS).

Each image is loaded, fully decoded once (so that the paper's size filters use the true size, and training never
meets an image already known to be broken), filtered, and deduplicated by content; its bytes are stored unchanged
under ``{i}.{ext}`` next to the :class:`Document` JSON. Every image that cannot be used is a counted skip.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PIL import Image

from flamingo_vlm.data.decoding import decode_image
from flamingo_vlm.data.document import Document, ImageItem, Item, TextItem
from flamingo_vlm.data.html import ImageFilter, parse_html
from flamingo_vlm.data.sharding import Record
from flamingo_vlm.data.skips import BadSample, SkipCounts

_FORMAT_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


@dataclass
class PendingImage:
    """An image of a document being packed: its reference, and how to get its bytes (raising BadSample)."""

    item: ImageItem
    load: Callable[[], bytes]


def checked_image(data: bytes, image_filter: ImageFilter, name: str) -> tuple[str, int, int]:
    """``(extension, width, height)`` of image bytes that fully decode and pass the filters; else BadSample."""
    width, height = decode_image(data).size
    if (reason := image_filter.rejection(width, height)) is not None:
        raise BadSample(reason, name)
    extension = _FORMAT_EXTENSION.get(Image.open(io.BytesIO(data)).format or "")
    if extension is None:
        raise BadSample("unsupported_image_format", name)
    return extension, width, height


def pack_document(
    key: str,
    url: str,
    items: Iterable[TextItem | PendingImage],
    image_filter: ImageFilter,
    max_images: int,
    images_skipped: SkipCounts,
    source: str = "",
) -> tuple[Record, int]:
    """The shard record of one document and its image count; raises :class:`BadSample` to skip the document.

    Text items are kept as given; each pending image is loaded, checked and stored, or skipped and counted.
    """
    items = list(items)
    if not any(isinstance(i, TextItem) and i.text.strip() for i in items):
        raise BadSample("no_text")
    n_images = sum(isinstance(i, PendingImage) for i in items)
    if n_images > max_images:  # checked before decoding: galleries are expensive and useless
        raise BadSample("too_many_images", f"{n_images} > {max_images}")
    record: Record = {"__key__": key}
    document = Document(url=url)
    seen_content: set[str] = set()
    for item in items:
        if isinstance(item, TextItem):
            document.items.append(item)
            continue
        try:
            data = item.load()
            extension, width, height = checked_image(data, image_filter, item.item.src)
        except BadSample as e:
            images_skipped.skip(e.reason, e.detail, source)
            continue
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen_content:  # same picture under another name
            images_skipped.skip("duplicate_image", item.item.src, source)
            continue
        seen_content.add(digest)
        name = f"{len(seen_content) - 1}.{extension}"
        record[name] = data
        document.items.append(ImageItem(src=name, alt=item.item.alt, width=width, height=height))
    if not document.images:
        raise BadSample("no_images")
    record["json"] = document.to_json()
    return record, len(document.images)


def html_items(html: bytes, base: str, image_filter: ImageFilter, images_skipped: SkipCounts, url: str) -> list[Item]:
    """The parsed items of a UTF-8 page, images still unresolved; raises BadSample for non-UTF-8 or no text."""
    try:
        text = html.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadSample("non_utf8_text", str(e)) from e
    parsed = parse_html(text, base=base, image_filter=image_filter, skipped=images_skipped, url=url)
    if not any(t.text for t in parsed.texts):  # before any image is read
        raise BadSample("no_text")
    return parsed.items
