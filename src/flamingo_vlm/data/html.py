"""HTML → :class:`Document`: the M3W-style extraction of text blocks and images in DOM order.

The page is walked depth-first with explicit enter/exit events, so that a block element's end
closes its text (``<div><p>a</p>b</div>`` gives two blocks, "a" and "b") and an ``<img>`` nested
inside a paragraph splits it where it stands.  Boilerplate containers (navigation, headers,
footers, scripts, forms...) are removed before the walk.  Image filters follow the paper: images
smaller than 64 px on a side or with an aspect ratio above 3 are dropped when their size is known,
and an image repeated in a page is kept once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlparse

from selectolax.lexbor import LexborHTMLParser, LexborNode

from flamingo_vlm.data.document import Document, ImageItem, TextItem
from flamingo_vlm.data.skips import BadSample, SkipCounts

# Removed with their content: never part of the page's prose.
BOILERPLATE_TAGS = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "iframe",
    "object",
    "embed",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "button",
    "select",
    "textarea",
    "menu",
    "head",
)

# Elements whose start or end separates text blocks; inline elements (b, a, span...) do not.
BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "main",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "figure",
        "figcaption",
        "caption",
        "table",
        "tr",
        "td",
        "th",
        "blockquote",
        "pre",
        "br",
        "hr",
        "body",
        "address",
        "details",
        "summary",
    }
)

_WHITESPACE = re.compile(r"\s+")

# The HTML tree builder's cost grows with the square of the nesting depth (10^4 levels: 0.2 s; 10^5: 20 s),
# so a page nested deeper than any real page is refused before it is parsed.
MAX_NESTING_DEPTH = 10_000
_TAG = re.compile(r"<(/?)([a-zA-Z][^\s/>]*)[^>]*?(/?)>")
# Elements that never hold children, or whose end tag is optional: they do not deepen the estimate.
_FLAT_TAGS = frozenset(
    "area base br col embed hr img input link meta source track wbr p li dt dd tr td th option optgroup "
    "thead tbody tfoot colgroup caption rb rt rtc rp html head body".split()
)


def nesting_depth(html: str) -> int:
    """An upper estimate of the page's element nesting depth, from its tags alone (no parse)."""
    depth = deepest = 0
    for closing, tag, self_closing in _TAG.findall(html):
        if tag.lower() in _FLAT_TAGS or self_closing:
            continue
        depth = max(depth - 1, 0) if closing else depth + 1
        deepest = max(deepest, depth)
    return deepest


@dataclass
class ImageFilter:
    """The paper's image filters, applied whenever an image's size is known."""

    min_side: int = 64
    max_aspect_ratio: float = 3.0

    def rejection(self, width: int | None, height: int | None) -> str | None:
        """The skip reason for an image of this size, or ``None`` when it passes."""
        if width is None or height is None:
            return None
        if min(width, height) < self.min_side:
            return "image_too_small"
        if max(width, height) / max(min(width, height), 1) > self.max_aspect_ratio:
            return "image_aspect_ratio"
        return None


def resolve_src(src: str, base: str | None) -> str:
    """Resolve an ``<img src>`` against the page's base: a URL (``urljoin``) or a local directory."""
    src = src.strip()
    if base is None or urlparse(src).scheme:
        return src
    if urlparse(base).scheme in ("http", "https", "file"):
        return urljoin(base, src)
    return os.path.normpath(os.path.join(base, unquote(src)))


def _int_attribute(value: str | None) -> int | None:
    match = re.match(r"\s*(\d+)\s*(px)?\s*$", value or "")
    return int(match.group(1)) if match else None


def parse_html(
    html: str | bytes,
    base: str | None = None,
    image_filter: ImageFilter | None = None,
    skipped: SkipCounts | None = None,
    url: str = "",
) -> Document:
    """Extract the ordered text blocks and images of a page.

    Args:
        html: the page; bytes must be UTF-8 (raises ``UnicodeDecodeError`` otherwise).
        base: directory or URL that relative ``src`` attributes are resolved against.
        image_filter: size filters applied to images whose ``width``/``height`` attributes are set.
        skipped: if given, dropped images are counted here by reason.

    Raises:
        BadSample: ``too_deeply_nested`` for a page nested more than :data:`MAX_NESTING_DEPTH` levels.
    """
    if isinstance(html, bytes):
        html = html.decode("utf-8")
    if (depth := nesting_depth(html)) > MAX_NESTING_DEPTH:
        raise BadSample("too_deeply_nested", f"{depth} levels > {MAX_NESTING_DEPTH}")
    image_filter = image_filter or ImageFilter()
    skipped = skipped if skipped is not None else SkipCounts()
    tree = LexborHTMLParser(html)
    tree.strip_tags(list(BOILERPLATE_TAGS))
    root = tree.body or tree.root
    document = Document(url=url)
    seen_src: set[str] = set()
    buffer: list[str] = []

    def flush() -> None:
        text = _WHITESPACE.sub(" ", "".join(buffer)).strip()
        buffer.clear()
        if text:
            document.items.append(TextItem(text))

    if root is None:
        return document
    # Explicit stack of (node, entering?) instead of recursion: real pages nest thousands deep.
    stack: list[tuple[LexborNode, bool]] = [(root, True)]
    while stack:
        node, entering = stack.pop()
        tag = node.tag
        if tag == "-text":
            buffer.append(node.text(deep=False) or "")
        elif tag == "img":
            flush()
            src = node.attributes.get("src") or ""
            if not src.strip():
                skipped.skip("image_without_src")
                continue
            image = ImageItem(
                src=resolve_src(src, base),
                alt=_WHITESPACE.sub(" ", node.attributes.get("alt") or "").strip(),
                width=_int_attribute(node.attributes.get("width")),
                height=_int_attribute(node.attributes.get("height")),
            )
            if (reason := image_filter.rejection(image.width, image.height)) is not None:
                skipped.skip(reason, image.src)
            elif image.src in seen_src:
                skipped.skip("duplicate_image", image.src)
            else:
                seen_src.add(image.src)
                document.items.append(image)
        elif entering:
            if tag in BLOCK_TAGS:
                flush()
            stack.append((node, False))
            stack.extend((child, True) for child in reversed(list(node.iter(include_text=True))))
        elif tag in BLOCK_TAGS:
            flush()
    flush()
    return document
