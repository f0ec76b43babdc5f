"""``flamingo pretrain lm``: a byte-level BPE tokenizer and a small Llama pretrained on plain text.

The paper freezes a pretrained LM; where none can be downloaded, this makes one, saved like a hub checkpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from flamingo_vlm.pretrain.lm import LMConfig
from flamingo_vlm.recipes import config_flag
from flamingo_vlm.recipes.pretrain_vision import add_section_flags


@dataclass
class PretrainLMConfig:
    text: list[str] = field(default_factory=list)  # text files, one document a line
    out: str = ""
    tokenizer: str | None = None  # an existing tokenizer directory; None trains a byte-level BPE
    vocab_size: int = 2048
    model: LMConfig = field(default_factory=LMConfig)


Config = PretrainLMConfig
DEFAULT_CONFIG = None


def main(config: PretrainLMConfig) -> int:
    from transformers import AutoTokenizer

    from flamingo_vlm.pretrain import build_llama, pretrain_lm
    from flamingo_vlm.pretrain.schedule import progress_callback
    from flamingo_vlm.tokenization import train_bpe_tokenizer

    if not (config.text and config.out):
        raise ValueError("pretrain lm needs text files and out (--text/--out)")
    texts = [line for path in config.text for line in Path(path).read_text().splitlines() if line.strip()]
    if config.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    else:
        tokenizer = train_bpe_tokenizer(texts, vocab_size=config.vocab_size)
    model = build_llama(tokenizer, config.model)
    history = pretrain_lm(model, tokenizer, texts, config.model, on_step=progress_callback(config.model.steps, "lm"))
    model.save_pretrained(config.out)
    tokenizer.save_pretrained(config.out)
    print(f"LM saved to {config.out} (final loss {history[-1]:.3f})")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--text", key="text", nargs="+")
    config_flag(parser, "--out", key="out")
    config_flag(parser, "--tokenizer", key="tokenizer", help="existing tokenizer directory (default: train a BPE)")
    config_flag(parser, "--vocab-size", key="vocab_size", type=int, help="default 2048")
    add_section_flags(parser, "model", LMConfig)
