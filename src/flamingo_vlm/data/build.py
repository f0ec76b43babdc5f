"""``flamingo data build-web``: HTML pages with local images → WebDataset shards of documents.

One record per page: ``<key>.json`` (the :class:`Document`, image ``src`` rewritten to the file
name inside the record) and ``<key>.<i>.<ext>`` (each image's original bytes, not re-encoded).
Images are fully decoded once here, so that the paper's size filters use the true size and
training never meets an image that was already known to be broken.

Pages are untrusted (crawled HTML): an ``<img src>`` may climb out of the pages folder
(``../../photo.png``), be absolute (``/etc/passwd``), a ``file:`` URL, or name a symlink that points
outside.  Packing such a file would leak local files into the shards, so every page and image is
checked, by its real path (symlinks resolved), to lie inside its *root*, the input folder it was found
under, and is otherwise skipped (``page_outside_root`` / ``image_outside_root``) without being read.

:func:`~flamingo_vlm.data.packing.pack_document` turns the documents of every input format (local pages, WARC
pages in :mod:`.warc`, the MMC4 and OBELICS importers) into records, and :mod:`.sharding` writes their shards.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from flamingo_vlm.data.document import ImageItem
from flamingo_vlm.data.html import ImageFilter
from flamingo_vlm.data.packing import PendingImage, html_items, pack_document
from flamingo_vlm.data.sharding import BuildReport, Record, ShardPlan, counted, write_shards
from flamingo_vlm.data.skips import BadSample, SkipCounts

if TYPE_CHECKING:
    from flamingo_vlm.data.warc import WarcIndex, WarcRecordAt

__all__ = ["BuildReport", "build_web_shards", "find_inputs", "find_pages", "find_warcs", "page_record", "page_roots"]

HTML_EXTENSIONS = (".html", ".htm")
WARC_EXTENSIONS = (".warc", ".warc.gz")


def page_roots(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """The folders pages and images may be read from: each input directory, or an input page's own folder."""
    return [os.fspath(p) if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in inputs]


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` lies in the real directory ``root`` once every symlink on its way is resolved."""
    return os.path.commonpath([os.path.realpath(path), root]) == root


def _root_of(page: str, roots: Sequence[str | os.PathLike] | None) -> str:
    """The real path of the deepest root holding ``page``, else of the page's folder.

    Chosen by the names as given, not resolved: a page reached through a symlinked folder that leads out of
    its root keeps that root, and is then refused.
    """
    folder = os.path.dirname(os.path.abspath(page))
    holding = [r for r in map(os.path.abspath, roots or ()) if os.path.commonpath([folder, r]) == r]
    return os.path.realpath(max(holding, key=len, default=folder))


def find_pages(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """HTML files given directly or found (recursively) under given directories, sorted; WARC files excluded."""
    return [p for p in find_inputs(inputs, HTML_EXTENSIONS) if not p.lower().endswith(WARC_EXTENSIONS)]


def find_warcs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """``.warc``/``.warc.gz`` files given directly or found (recursively) under given directories, sorted."""
    return [p for p in find_inputs(inputs, WARC_EXTENSIONS) if p.lower().endswith(WARC_EXTENSIONS)]


def find_inputs(inputs: Sequence[str | os.PathLike], extensions: tuple[str, ...]) -> list[str]:
    """Files with these extensions under the given directories (sorted per directory), and every given file.

    The order is the inputs' order: it numbers the units, hence names the shards."""
    found: list[str] = []
    for entry in map(os.fspath, inputs):
        if os.path.isdir(entry):
            paths = glob.glob(os.path.join(entry, "**", "*"), recursive=True)
            found.extend(sorted(p for p in paths if p.lower().endswith(extensions) and os.path.isfile(p)))
        elif os.path.isfile(entry):
            found.append(entry)
        else:
            raise FileNotFoundError(f"no such input file or directory: {entry}")
    return found


def _read_local(src: str, root: str) -> bytes:
    """The bytes of a local image file under ``root``; a URL or a path leading out is refused unread."""
    if urlparse(src).scheme:  # http:, data:, file: ... : only local files next to the page are packed
        raise BadSample("unsupported_image_src", src[:80])
    if not _inside(src, root):  # checked before opening: the file is never read
        raise BadSample("image_outside_root", src[:200])
    try:
        with open(src, "rb") as f:
            return f.read()
    except OSError as e:
        raise BadSample("missing_image_file", str(e)) from e


def page_record(
    path: str,
    key: str,
    image_filter: ImageFilter,
    max_images: int,
    images_skipped: SkipCounts,
    root: str | None = None,
) -> tuple[Record, int]:
    """The shard record of one page and its image count; raises :class:`BadSample` to skip the page.

    ``root`` is the real path of the folder the page and its images must lie in (default: the page's folder).
    """
    root = root or _root_of(path, None)
    if not _inside(path, root):  # a symlinked page pointing elsewhere
        raise BadSample("page_outside_root", path)
    with open(path, "rb") as f:
        raw = f.read()
    items = html_items(raw, os.path.dirname(os.path.abspath(path)), image_filter, images_skipped, path)
    pending = [
        PendingImage(i, functools.partial(_read_local, i.src, root)) if isinstance(i, ImageItem) else i for i in items
    ]
    return pack_document(key, path, pending, image_filter, max_images, images_skipped, path)


@dataclass
class WebSource:
    """The units of ``build-web``: local HTML pages, then the HTML responses of the WARC files."""

    pages: list[str]
    image_filter: ImageFilter
    max_images: int
    roots: list[str] | None = None
    warc: WarcIndex | None = None

    def __len__(self) -> int:
        return len(self.pages) + (len(self.warc.pages) if self.warc else 0)

    def records(self, start: int, stop: int, report: BuildReport) -> Iterator[Record]:
        for index in range(start, stop):
            source = self.pages[index] if index < len(self.pages) else self._warc_page(index).url
            if (record := counted(report, source, self._record, index)) is not None:
                yield record

    def _warc_page(self, index: int) -> WarcRecordAt:
        assert self.warc is not None
        return self.warc.pages[index - len(self.pages)]

    def _record(self, index: int, images_skipped: SkipCounts) -> tuple[Record, int]:
        key = f"page{index:09d}"
        if index < len(self.pages):
            path = self.pages[index]
            root = _root_of(path, self.roots)
            return page_record(path, key, self.image_filter, self.max_images, images_skipped, root)
        assert self.warc is not None
        return self.warc.page_record(self._warc_page(index), key, self.image_filter, self.max_images, images_skipped)


def build_web_shards(
    pages: Iterable[str],
    output_dir: str | os.PathLike,
    prefix: str = "web",
    pages_per_shard: int = 1000,
    max_images_per_page: int = 100,
    image_filter: ImageFilter | None = None,
    progress: bool = True,
    roots: Sequence[str | os.PathLike] | None = None,
    warcs: Sequence[str | os.PathLike] = (),
    plan: ShardPlan | None = None,
) -> BuildReport:
    """Write one record per usable page into ``{output_dir}/{prefix}-%06d.tar`` shards.

    Shard ``j`` holds the usable pages among input pages ``[j * pages_per_shard, (j + 1) * pages_per_shard)``
    (local pages first, then the WARC files' HTML responses in file order), written atomically with fixed
    mtimes, so that a killed build leaves no half-written shard and a rerun, with any ``plan`` (workers,
    machines), writes the same bytes: see :mod:`flamingo_vlm.data.sharding`.

    ``roots`` are the folders the pages were found under (:func:`page_roots` of the inputs): a page and its
    images must lie in the deepest root holding the page; without roots, in the page's own folder. Pages of
    ``warcs`` take their images from image responses in those same WARC files, never from anywhere else.
    """
    warc_index = None
    if warcs:
        from flamingo_vlm.data.warc import WarcIndex  # warcio is only needed for WARC inputs

        warc_index = WarcIndex.scan(warcs)
    source = WebSource(
        list(pages),
        image_filter or ImageFilter(),
        max_images_per_page,
        [os.fspath(r) for r in roots] if roots is not None else None,
        warc_index,
    )
    plan = plan or ShardPlan()
    plan = ShardPlan(pages_per_shard, plan.workers, plan.shard_index, plan.num_shards)
    report = write_shards(source, output_dir, prefix, plan, progress)
    if warc_index is not None:
        report.pages_skipped.merge(warc_index.skipped)
    return report
