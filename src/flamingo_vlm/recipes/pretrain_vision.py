"""``flamingo pretrain vision``: contrastive pretraining of the built-in NFNet encoder on image–text pairs.

The paper freezes a contrastively pretrained encoder; where none can be downloaded, this makes one, saved in
the same format as a hub checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from flamingo_vlm.pretrain.contrastive import ContrastiveConfig
from flamingo_vlm.recipes import config_flag


@dataclass
class PretrainVisionConfig:
    pairs: str = ""  # image-text pair shards (directory, glob or brace pattern)
    tokenizer: str = ""  # tokenizer directory for the text tower
    out: str = ""
    image_size: int = 64
    width: int = 256  # feature width of the encoder
    batch_size: int = 64
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)


Config = PretrainVisionConfig
DEFAULT_CONFIG = None


def main(config: PretrainVisionConfig) -> int:
    from transformers import AutoTokenizer

    from flamingo_vlm.data import ImageTextDataset, Mixture, MixtureComponent
    from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
    from flamingo_vlm.pretrain import pretrain_vision_encoder
    from flamingo_vlm.pretrain.schedule import progress_callback
    from flamingo_vlm.processing import FlamingoProcessor

    if not (config.pairs and config.tokenizer and config.out):
        raise ValueError("pretrain vision needs pairs, tokenizer and out (--pairs/--tokenizer/--out)")
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    encoder = NFNetEncoder(NFNetConfig(image_size=config.image_size, hidden_size=config.width))
    processor = FlamingoProcessor(tokenizer, encoder.image_size, encoder.image_mean, encoder.image_std)
    pairs = ImageTextDataset(config.pairs, processor.tokenizer, processor.transform_image, max_length=64)
    stream = (step["pairs"][0] for step in Mixture([MixtureComponent(pairs, 1.0, config.batch_size, "pairs")]))
    on_step = progress_callback(config.contrastive.steps, "vision")
    history = pretrain_vision_encoder(encoder, stream, len(processor.tokenizer), config.contrastive, on_step)
    encoder.save_pretrained(config.out)
    (Path(config.out) / "pretrain_history.json").write_text(json.dumps({"loss": history}))
    print(f"vision encoder saved to {config.out} (final contrastive loss {history[-1]:.3f})")
    return 0


def add_section_flags(parser: argparse.ArgumentParser, section: str, config_cls: type) -> None:
    """A ``--field-name`` flag for each field of a config section (``section.field_name=value``)."""
    for f in dataclasses.fields(config_cls):
        config_flag(
            parser,
            f"--{f.name.replace('_', '-')}",
            key=f"{section}.{f.name}",
            type=type(f.default),
            help=f"default {f.default}",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--pairs", key="pairs", help="image-text pair shards (directory, glob or brace pattern)")
    config_flag(parser, "--tokenizer", key="tokenizer", help="tokenizer directory for the text tower")
    config_flag(parser, "--out", key="out")
    config_flag(parser, "--image-size", key="image_size", type=int, help="default 64")
    config_flag(parser, "--width", key="width", type=int, help="feature width of the encoder (default 256)")
    config_flag(parser, "--batch-size", key="batch_size", type=int, help="default 64")
    add_section_flags(parser, "contrastive", ContrastiveConfig)
