"""WARC files (Common Crawl, the source of M3W) as input of ``flamingo data build-web``.

A first pass over the WARC files indexes their ``response`` records with HTTP status 200 by target URL
(file and byte offset; bodies are not kept). HTML responses become pages in file order; a page's ``<img src>``
is resolved against the page URL (``urljoin``), stripped of its ``#fragment``, and looked up among the indexed
responses of *all* the given WARC files. Nothing else is ever read: an image that was not captured is skipped as
``image_not_in_warc``, and a non-HTTP ``src`` (``file:``, ``data:``) as ``unsupported_image_src``, without
touching the local disk or the network. A record is re-read by seeking to its offset, which works for
uncompressed WARCs and for ``.warc.gz`` compressed per record, as the WARC standard recommends and Common Crawl
does. Format: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urlparse

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from flamingo_vlm.data.document import ImageItem
from flamingo_vlm.data.html import ImageFilter
from flamingo_vlm.data.packing import PendingImage, html_items, pack_document
from flamingo_vlm.data.sharding import Record
from flamingo_vlm.data.skips import BadSample, SkipCounts

HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class WarcRecordAt:
    """Where a response record starts: ``files[file]`` at byte ``offset``; ``url`` is its target URI."""

    file: int
    offset: int
    url: str
    charset: str = "utf-8"


@dataclass
class WarcIndex:
    """HTML pages (in file order) and every 200 response by URL, over a set of WARC files."""

    files: list[str]
    pages: list[WarcRecordAt] = field(default_factory=list)
    responses: dict[str, WarcRecordAt] = field(default_factory=dict)
    skipped: SkipCounts = field(default_factory=SkipCounts)

    @classmethod
    def scan(cls, files: Sequence[str | os.PathLike]) -> WarcIndex:
        """Index the files' headers; a file that stops parsing keeps the records read so far (counted skip)."""
        index = cls([os.fspath(f) for f in files])
        for number, path in enumerate(index.files):
            try:
                with open(path, "rb") as stream:
                    records = ArchiveIterator(stream)
                    for record in records:
                        if record.format != "warc":  # warcio reads anything as a lenient ARC record
                            raise ValueError(f"not a WARC record ({record.format})")
                        if record.rec_type != "response" or record.http_headers is None:
                            continue
                        if record.http_headers.get_statuscode() != "200":
                            continue
                        url = urldefrag(record.rec_headers.get_header("WARC-Target-URI") or "").url
                        media_type, charset = _content_type(record.http_headers.get_header("Content-Type") or "")
                        at = WarcRecordAt(number, records.get_record_offset(), url, charset)
                        index.responses.setdefault(url, at)  # the first capture of a URL wins
                        if media_type in HTML_TYPES:
                            index.pages.append(at)
            except (ArchiveLoadFailed, OSError, EOFError, ValueError) as e:
                index.skipped.skip("unreadable_warc", str(e)[:200], path)
        return index

    def read(self, at: WarcRecordAt) -> bytes:
        """The HTTP body of the record at ``at`` (transfer and content encodings undone)."""
        try:
            with open(self.files[at.file], "rb") as stream:
                stream.seek(at.offset)
                record = next(iter(ArchiveIterator(stream)))
                return record.content_stream().read()
        except (ArchiveLoadFailed, OSError, EOFError, ValueError, StopIteration) as e:
            raise BadSample("unreadable_warc_record", f"{at.url}: {e}"[:200]) from e

    def image(self, url: str) -> bytes:
        """The body of the captured response for an image URL; BadSample when it is not in the WARC files."""
        if urlparse(url).scheme not in ("http", "https"):
            raise BadSample("unsupported_image_src", url[:80])
        at = self.responses.get(urldefrag(url).url)
        if at is None:
            raise BadSample("image_not_in_warc", url[:200])
        return self.read(at)

    def page_record(
        self, page: WarcRecordAt, key: str, image_filter: ImageFilter, max_images: int, images_skipped: SkipCounts
    ) -> tuple[Record, int]:
        """The shard record of one HTML response and its image count; raises BadSample to skip the page."""
        raw = self.read(page)
        try:
            html = raw.decode(page.charset).encode("utf-8") if page.charset != "utf-8" else raw
        except (UnicodeDecodeError, LookupError) as e:
            raise BadSample("non_utf8_text", f"{page.charset}: {e}"[:200]) from e
        items = html_items(html, page.url, image_filter, images_skipped, page.url)
        pending = [
            PendingImage(i, functools.partial(self.image, i.src)) if isinstance(i, ImageItem) else i for i in items
        ]
        return pack_document(key, page.url, pending, image_filter, max_images, images_skipped, page.url)


def _content_type(value: str) -> tuple[str, str]:
    """``(media type, charset)`` of a Content-Type header; the charset defaults to UTF-8."""
    media_type, *params = (part.strip() for part in value.split(";"))
    charset = "utf-8"
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "charset" and param_value.strip():
            charset = param_value.strip().strip("\"'").lower()
    return media_type.lower(), "utf-8" if charset in ("utf8", "utf-8") else charset
