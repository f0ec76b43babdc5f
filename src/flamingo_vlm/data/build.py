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
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import webdataset as wds
from PIL import Image
from tqdm.auto import tqdm

from flamingo_vlm.data.decoding import decode_image
from flamingo_vlm.data.document import Document, ImageItem
from flamingo_vlm.data.html import ImageFilter, parse_html
from flamingo_vlm.data.skips import BadSample, SkipCounts

HTML_EXTENSIONS = (".html", ".htm")
_FORMAT_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


@dataclass
class BuildReport:
    pages_kept: int = 0
    images_kept: int = 0
    pages_skipped: SkipCounts = field(default_factory=SkipCounts)
    images_skipped: SkipCounts = field(default_factory=SkipCounts)
    shards: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"pages: kept {self.pages_kept}, "
            f"skipped {sum(self.pages_skipped.values())} ({self.pages_skipped.summary()})\n"
            f"images: kept {self.images_kept}, "
            f"skipped {sum(self.images_skipped.values())} ({self.images_skipped.summary()})\n"
            f"shards: {len(self.shards)}"
        )


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
    """HTML files given directly or found (recursively) under given directories, sorted."""
    pages: list[str] = []
    for entry in map(os.fspath, inputs):
        if os.path.isdir(entry):
            found = glob.glob(os.path.join(entry, "**", "*"), recursive=True)
            pages.extend(sorted(p for p in found if p.lower().endswith(HTML_EXTENSIONS)))
        elif os.path.isfile(entry):
            pages.append(entry)
        else:
            raise FileNotFoundError(f"no such HTML file or directory: {entry}")
    return pages


def _load_image(image: ImageItem, image_filter: ImageFilter, root: str) -> tuple[bytes, str, int, int]:
    """``(bytes, extension, width, height)`` of a local image under ``root`` that passes the filters."""
    if urlparse(image.src).scheme:  # http:, data:, file: ... : only local files next to the page are packed
        raise BadSample("unsupported_image_src", image.src[:80])
    if not _inside(image.src, root):  # checked before opening: the file is never read
        raise BadSample("image_outside_root", image.src[:200])
    try:
        with open(image.src, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadSample("missing_image_file", str(e)) from e
    width, height = decode_image(data).size
    if (reason := image_filter.rejection(width, height)) is not None:
        raise BadSample(reason, image.src)
    extension = _FORMAT_EXTENSION.get(Image.open(io.BytesIO(data)).format or "")
    if extension is None:
        raise BadSample("unsupported_image_format", image.src)
    return data, extension, width, height


def page_record(
    path: str,
    key: str,
    image_filter: ImageFilter,
    max_images: int,
    images_skipped: SkipCounts,
    root: str | None = None,
) -> tuple[dict[str, bytes | str], int]:
    """The shard record of one page and its image count; raises :class:`BadSample` to skip the page.

    ``root`` is the real path of the folder the page and its images must lie in (default: the page's folder).
    """
    root = root or _root_of(path, None)
    if not _inside(path, root):  # a symlinked page pointing elsewhere
        raise BadSample("page_outside_root", path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        html = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadSample("non_utf8_text", str(e)) from e
    parsed = parse_html(
        html, base=os.path.dirname(os.path.abspath(path)), image_filter=image_filter, skipped=images_skipped, url=path
    )
    if not any(t.text for t in parsed.texts):
        raise BadSample("no_text")
    if len(parsed.images) > max_images:  # checked before decoding: galleries are expensive and useless
        raise BadSample("too_many_images", f"{len(parsed.images)} > {max_images}")

    record: dict[str, bytes | str] = {"__key__": key}
    document = Document(url=parsed.url)
    seen_content: set[str] = set()
    for item in parsed.items:
        if not isinstance(item, ImageItem):
            document.items.append(item)
            continue
        try:
            data, extension, width, height = _load_image(item, image_filter, root)
        except BadSample as e:
            images_skipped.skip(e.reason, e.detail, path)
            continue
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen_content:  # same picture under another name
            images_skipped.skip("duplicate_image", item.src, path)
            continue
        seen_content.add(digest)
        name = f"{len(seen_content) - 1}.{extension}"
        record[name] = data
        document.items.append(ImageItem(src=name, alt=item.alt, width=width, height=height))
    if not document.images:
        raise BadSample("no_images")
    record["json"] = document.to_json()
    return record, len(document.images)


def _publish(tmp: str) -> None:
    """Make a finished shard visible under its final name: fsync, then one atomic rename."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, tmp.removesuffix(".tmp"))


def build_web_shards(
    pages: Iterable[str],
    output_dir: str | os.PathLike,
    prefix: str = "web",
    pages_per_shard: int = 1000,
    max_images_per_page: int = 100,
    image_filter: ImageFilter | None = None,
    progress: bool = True,
    roots: Sequence[str | os.PathLike] | None = None,
) -> BuildReport:
    """Write one record per usable page into ``{output_dir}/{prefix}-%06d.tar`` shards.

    Each shard is written under a temporary name (``….tar.tmp``, which no reader's ``*.tar`` matches) and
    renamed once complete, so a build killed midway never leaves a half-written shard where training would
    read it; entries carry a fixed mtime, so a rerun writes the same bytes.

    ``roots`` are the folders the pages were found under (:func:`page_roots` of the inputs): a page and its
    images must lie in the deepest root holding the page; without roots, in the page's own folder.
    """
    image_filter = image_filter or ImageFilter()
    pages = list(pages)
    os.makedirs(output_dir, exist_ok=True)
    report = BuildReport()
    pattern = os.path.join(os.fspath(output_dir), f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern + ".tmp", maxcount=pages_per_shard, verbose=0, post=_publish, mtime=0.0) as writer:
        for index, path in enumerate(tqdm(pages, desc="pages", unit="page", disable=not progress)):
            images_skipped = SkipCounts()
            try:
                record, n_images = page_record(
                    path, f"page{index:09d}", image_filter, max_images_per_page, images_skipped, _root_of(path, roots)
                )
            except BadSample as e:
                report.pages_skipped.skip(e.reason, e.detail, path)
                continue
            finally:
                report.images_skipped.merge(images_skipped)
            writer.write(record)
            report.pages_kept += 1
            report.images_kept += n_images
        written = writer.shard
    report.shards = [pattern % i for i in range(written)]
    if report.pages_kept == 0:  # ShardWriter opens its first file eagerly: do not leave an empty shard
        for shard in report.shards:
            os.remove(shard)
        report.shards = []
    return report
