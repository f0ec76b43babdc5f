import random

import numpy as np
import pytest
import torch
from data_fixtures import image_bytes, transform, write_shard

from flamingo_vlm.data import (
    Document,
    ImageItem,
    InterleavedConfig,
    InterleavedDataset,
    Slot,
    TextItem,
    document_text,
    interleave,
    sample_window,
)
from flamingo_vlm.data.text import IGNORE_INDEX, tokenize_plain
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN


@pytest.fixture()
def ids(tokenizer):
    media, eoc = tokenizer.convert_tokens_to_ids([MEDIA_TOKEN, EOC_TOKEN])
    return media, eoc, lambda text: tokenize_plain(tokenizer, text)


DOC = Document(
    [
        TextItem("intro text"),
        ImageItem("0.png"),
        TextItem("a red square"),
        TextItem("more"),
        ImageItem("1.png"),
        TextItem("a blue circle"),
    ]
)


def test_previous_image_placement_exact(tokenizer, ids):
    media, eoc, tok = ids
    tokens, order = interleave(DOC, tokenizer, tie_next=False)
    assert tokens == tok("intro text") + [eoc, media] + tok("a red square more") + [eoc, media] + tok(
        "a blue circle"
    ) + [eoc]
    assert order == [0, 1]


def test_p_next_ties_text_to_next_image(tokenizer, ids):
    media, eoc, tok = ids
    tokens, order = interleave(DOC, tokenizer, tie_next=True)
    # the text before each image now follows its <image> token; text after the last image has none
    assert tokens == [media] + tok("intro text") + [eoc, media] + tok("a red square more") + [eoc]
    assert order == [0, 1]


def test_leading_image_has_no_dangling_eoc_and_literal_tokens_stay_text(tokenizer, ids):
    media, eoc, tok = ids
    doc = Document([ImageItem("0.png"), TextItem("see <image> and <|endofchunk|> here")])
    tokens, _ = interleave(doc, tokenizer)
    assert tokens[0] == media and tokens.count(media) == 1 and tokens.count(eoc) == 1 and tokens[-1] == eoc


@pytest.mark.parametrize(
    "doc",
    [
        DOC,
        Document([ImageItem("0.png"), TextItem("a"), TextItem("b"), ImageItem("1.png")]),
        Document([TextItem("title"), ImageItem("0.png")]),
    ],
)
def test_document_text_tokenises_like_interleave(tokenizer, doc):
    # The string an LM pretrains on must give exactly the ids the interleaved sampler feeds Flamingo.
    text = document_text(doc)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == interleave(doc, tokenizer)[0]


def test_window_properties_random_documents():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randrange(1, 900)
        is_media = np.zeros(n, dtype=bool)
        is_media[rng.sample(range(n), rng.randrange(1, min(n, 30) + 1))] = True
        start, end = sample_window(is_media, 256, 5, rng)
        window = is_media[start:end]
        assert 0 <= start < end <= n and end - start <= 256
        assert 1 <= window.sum() <= 5
        if end < min(start + 256, n):  # cut short: exactly before the 6th image
            assert is_media[end] and window.sum() == 5


@pytest.fixture()
def web_shard(tmp_path):
    """Three long pages of 12 images each, every image with its own colour."""
    records = []
    for p in range(3):
        items, record = [], {"__key__": f"page{p}"}
        for i in range(12):
            items += [
                TextItem(f"paragraph {p} {i} " + "a red square is above a blue circle. " * 6),
                ImageItem(f"{i}.png"),
            ]
            record[f"{i}.png"] = image_bytes(color=(p * 40, i * 20, 0))
        record["json"] = Document(items).to_json()
        records.append(record)
    return write_shard(tmp_path / "web-000000.tar", records)


def test_samples_respect_limits_and_labels(tokenizer, web_shard):
    media, eoc = tokenizer.convert_tokens_to_ids([MEDIA_TOKEN, EOC_TOKEN])
    dataset = InterleavedDataset(web_shard, tokenizer, transform, shuffle_buffer=1)
    stream = dataset.samples(Slot())
    for _ in range(12):
        s = next(stream)
        ids, labels, mask = s["input_ids"], s["labels"], s["attention_mask"].bool()
        assert ids.shape == labels.shape == (256,)
        n_media = int((ids == media).sum())
        assert 1 <= n_media <= 5 and s["pixel_values"].shape == (n_media, 1, 3, 16, 16) and s["media_mask"].all()
        first = int((ids == media).nonzero()[0])
        expected = torch.where(mask & (ids != media), ids, IGNORE_INDEX)
        expected[:first] = IGNORE_INDEX
        assert torch.equal(labels, expected)
        assert mask[: int(mask.sum())].all()  # right padding
        # each <image> token's pixels are the right page image (colour encodes the image index)
        assert torch.all(s["pixel_values"][1:, 0, 1, 0, 0] > s["pixel_values"][:-1, 0, 1, 0, 0])


def test_p_next_applies_per_page(tokenizer, web_shard):
    """With a short page that fits in the window, p_next=1 always starts with <image>, p_next=0 never."""
    media = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    for p_next, starts_with_image in ((1.0, True), (0.0, False)):
        config = InterleavedConfig(max_length=4096, max_images=20, p_next=p_next)
        stream = InterleavedDataset(web_shard, tokenizer, transform, config).samples(Slot())
        assert all((next(stream)["input_ids"][0] == media) == starts_with_image for _ in range(3))


def test_deeply_nested_record_json_is_a_counted_skip():
    """A crafted shard record must not stop the stream with a RecursionError from the JSON parser."""
    from flamingo_vlm.data.document import Document
    from flamingo_vlm.data.skips import BadSample
    from flamingo_vlm.data.text import decode_text

    deep = ("[" * 100_000 + "]" * 100_000).encode()
    with pytest.raises(BadSample, match="bad_document: document nests deeper"):
        Document.from_json(deep)
    with pytest.raises(BadSample, match="bad_caption_json: caption nests deeper"):
        decode_text(deep, "json")
