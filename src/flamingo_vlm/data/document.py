"""The interleaved document: a web page reduced to its text blocks and images, in DOM order.

This is the unit stored in a web shard (as JSON next to the image bytes) and the input of the
interleaved sampler.  Keeping it a plain ordered list of items, rather than text with markers,
lets the sampler decide where ``<image>`` and ``<|endofchunk|>`` go (and flip to tying text to
the next image) without re-parsing anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from flamingo_vlm.data.skips import BadSample
from flamingo_vlm.io import loads_json


@dataclass
class TextItem:
    text: str


@dataclass
class ImageItem:
    src: str  # resolved reference while parsing; the file name inside the shard record once stored
    alt: str = ""
    width: int | None = None
    height: int | None = None


Item = TextItem | ImageItem


@dataclass
class Document:
    items: list[Item] = field(default_factory=list)
    url: str = ""

    @property
    def images(self) -> list[ImageItem]:
        return [item for item in self.items if isinstance(item, ImageItem)]

    @property
    def texts(self) -> list[TextItem]:
        return [item for item in self.items if isinstance(item, TextItem)]

    def to_json(self) -> str:
        items = [
            {"type": "text", **asdict(i)} if isinstance(i, TextItem) else {"type": "image", **asdict(i)}
            for i in self.items
        ]
        return json.dumps({"url": self.url, "items": items}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes) -> Document:
        """Parse a stored document; anything malformed is a :class:`BadSample` (``bad_document``)."""
        try:
            raw = loads_json(data, "document")
            items: list[Item] = []
            for entry in raw["items"]:
                kind = entry.pop("type")
                if kind == "text":
                    items.append(TextItem(text=_checked(entry)["text"]))
                elif kind == "image":
                    items.append(ImageItem(**_checked(entry)))  # a missing src or an unknown field: TypeError
                else:
                    raise ValueError(f"unknown item type {kind!r}")
            return cls(items=items, url=str(raw.get("url", "")))
        except UnicodeDecodeError as e:
            raise BadSample("non_utf8_text", str(e)) from e
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadSample("bad_document", str(e)) from e


def _checked(entry: dict) -> dict:
    """An item's fields, type-checked: a stored field of the wrong type (a number as ``src``, ``null`` as text)
    would otherwise fail deep inside the sampler, or quietly become text such as ``"None"``."""
    types = {"text": (str,), "src": (str,), "alt": (str,), "width": (int, type(None)), "height": (int, type(None))}
    for key, value in entry.items():
        if key in types and (not isinstance(value, types[key]) or isinstance(value, bool)):
            raise TypeError(
                f"item field {key!r} must be {' or '.join(t.__name__ for t in types[key])}, got {value!r:.40}"
            )
    return entry
