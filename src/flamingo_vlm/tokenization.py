"""Tokenizer helpers: Flamingo's two special tokens, and a local byte-level BPE trainer.

Flamingo marks where an image stands in the text with ``<image>`` and closes the text that
belongs to an image with ``<|endofchunk|>``.  For a hub LM both are *added* tokens that it has
never seen; either way they get trainable rows of their own, the only part of the vocabulary that
trains (see :class:`flamingo_vlm.model.language.NewTokenEmbeddings`).  An LM pretrained with them in
its vocabulary (ShapesWorld's, which reads its corpora in Flamingo's interleaved form) keeps what it
learned: its rows are the starting point.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

MEDIA_TOKEN = "<image>"
EOC_TOKEN = "<|endofchunk|>"


def add_flamingo_tokens(
    tokenizer: PreTrainedTokenizerBase,
    media_token: str = MEDIA_TOKEN,
    eoc_token: str = EOC_TOKEN,
) -> tuple[int, int]:
    """Add the media and end-of-chunk tokens (idempotent) and return their ids.

    A tokenizer without a pad token gets its EOS as pad: padded positions are always masked, so
    their id never matters, and this avoids a third trainable row.
    """
    missing = [t for t in (media_token, eoc_token) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
        tokenizer.pad_token = tokenizer.eos_token
    media_id = tokenizer.convert_tokens_to_ids(media_token)
    eoc_id = tokenizer.convert_tokens_to_ids(eoc_token)
    return media_id, eoc_id


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    eos_token: str = "<|endoftext|>",
    min_frequency: int = 1,
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on ``texts``, locally and deterministically.

    Used by tests (tiny vocabularies) and by ShapesWorld, where no hub tokenizer can be fetched.
    The result is a plain ``PreTrainedTokenizerFast``: it saves and loads like any hub tokenizer.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        bos_token=eos_token,
        unk_token=eos_token,
        pad_token=eos_token,
    )
