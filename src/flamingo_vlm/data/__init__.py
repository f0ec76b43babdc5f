"""Training data: web pages → interleaved documents, image/video–text pairs, shards, mixtures."""

from flamingo_vlm.data.collate import collate
from flamingo_vlm.data.document import Document, ImageItem, TextItem
from flamingo_vlm.data.html import ImageFilter, parse_html
from flamingo_vlm.data.interleaved import (
    InterleavedConfig,
    InterleavedDataset,
    document_text,
    interleave,
    sample_window,
)
from flamingo_vlm.data.mixture import Mixture, MixtureComponent
from flamingo_vlm.data.pairs import ImageTextDataset, VideoTextDataset
from flamingo_vlm.data.shards import Position, ShardDataset, Slot
from flamingo_vlm.data.skips import BadSample, SkipCounts

__all__ = [
    "BadSample",
    "Document",
    "ImageFilter",
    "ImageItem",
    "ImageTextDataset",
    "InterleavedConfig",
    "InterleavedDataset",
    "Mixture",
    "MixtureComponent",
    "Position",
    "ShardDataset",
    "SkipCounts",
    "Slot",
    "TextItem",
    "VideoTextDataset",
    "collate",
    "document_text",
    "interleave",
    "parse_html",
    "sample_window",
]
