"""The text side of samples: decoding record text, tokenizing it safely, padding and labels."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from flamingo_vlm.data.skips import BadSample
from flamingo_vlm.io import loads_json
from flamingo_vlm.tokenization import EOC_TOKEN, MEDIA_TOKEN

IGNORE_INDEX = -100
CAPTION_KEYS = ("caption", "text", "txt")


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """``(media_id, eoc_id)``; raises ``ValueError`` if ``add_flamingo_tokens`` was not applied."""
    # Called once per document: a token lookup, not ``get_vocab()`` (which copies the vocabulary).
    media_id, eoc_id = tokenizer.convert_tokens_to_ids([MEDIA_TOKEN, EOC_TOKEN])
    missing = [t for t, i in ((MEDIA_TOKEN, media_id), (EOC_TOKEN, eoc_id)) if i is None or i == tokenizer.unk_token_id]
    if missing or tokenizer.pad_token_id is None:
        raise ValueError(
            f"tokenizer lacks {missing or 'a pad token'}: "
            "call flamingo_vlm.tokenization.add_flamingo_tokens(tokenizer) first"
        )
    return media_id, eoc_id


def tokenize_plain(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of raw text in which special-token strings are *not* special.

    A web page that literally contains ``<image>`` must not create a media token without an image.
    """
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def decode_text(data: bytes, extension: str) -> str:
    """Caption text from a ``txt`` file or the first caption field of a ``json`` file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadSample("non_utf8_text", str(e)) from e
    if extension == "json":
        try:
            meta = loads_json(text, "caption")
            text = next(meta[k] for k in CAPTION_KEYS if isinstance(meta, dict) and meta.get(k) is not None)
        except (ValueError, StopIteration) as e:
            raise BadSample("bad_caption_json", str(e) or "no caption field") from e
        if not isinstance(text, str):  # a list or an object would otherwise become its Python repr
            raise BadSample("bad_caption_json", f"caption is a {type(text).__name__}, not a string")
    text = " ".join(text.split())
    if not text:
        raise BadSample("empty_text")
    return text


def pad_sample(ids: list[int], labels: list[int], length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to ``length``: ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` on padding)."""
    if len(ids) > length or len(ids) != len(labels):
        raise ValueError(f"cannot pad {len(ids)} tokens / {len(labels)} labels to length {length}")
    pad = length - len(ids)
    return {
        "input_ids": torch.tensor(ids + [pad_id] * pad, dtype=torch.long),  # (L,)
        "attention_mask": torch.tensor([1] * len(ids) + [0] * pad, dtype=torch.long),  # (L,)
        "labels": torch.tensor(labels + [IGNORE_INDEX] * pad, dtype=torch.long),  # (L,)
    }
