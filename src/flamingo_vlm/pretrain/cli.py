"""``flamingo pretrain vision|lm``: make the frozen parts when none can be downloaded."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from flamingo_vlm.pretrain.contrastive import ContrastiveConfig, pretrain_vision_encoder
from flamingo_vlm.pretrain.lm import LMConfig, build_llama, pretrain_lm
from flamingo_vlm.pretrain.schedule import progress_callback


def _add_config_args(parser: argparse.ArgumentParser, config_cls) -> None:
    for f in dataclasses.fields(config_cls):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)


def _config(args: argparse.Namespace, config_cls):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def run_vision(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from flamingo_vlm.data import ImageTextDataset, Mixture, MixtureComponent
    from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
    from flamingo_vlm.processing import FlamingoProcessor

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    encoder = NFNetEncoder(NFNetConfig(image_size=args.image_size, hidden_size=args.width))
    processor = FlamingoProcessor(tokenizer, encoder.image_size, encoder.image_mean, encoder.image_std)
    pairs = ImageTextDataset(args.pairs, processor.tokenizer, processor.transform_image, max_length=64)
    stream = (step["pairs"][0] for step in Mixture([MixtureComponent(pairs, 1.0, args.batch_size, "pairs")]))
    config = _config(args, ContrastiveConfig)
    history = pretrain_vision_encoder(encoder, stream, len(processor.tokenizer), config, progress_callback(config.steps, "vision"))
    encoder.save_pretrained(args.out)
    (Path(args.out) / "pretrain_history.json").write_text(json.dumps({"loss": history}))
    print(f"vision encoder saved to {args.out} (final contrastive loss {history[-1]:.3f})")
    return 0


def run_lm(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from flamingo_vlm.tokenization import train_bpe_tokenizer

    texts = [line for path in args.text for line in Path(path).read_text().splitlines() if line.strip()]
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = train_bpe_tokenizer(texts, vocab_size=args.vocab_size)
    config = _config(args, LMConfig)
    model = build_llama(tokenizer, config)
    history = pretrain_lm(model, tokenizer, texts, config, on_step=progress_callback(config.steps, "lm"))
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"LM saved to {args.out} (final loss {history[-1]:.3f})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pretrain", help="pretrain a vision encoder or an LM to freeze")
    stages = parser.add_subparsers(dest="stage", required=True)
    vision = stages.add_parser("vision", help="contrastive pretraining of the built-in NFNet encoder")
    vision.add_argument("--pairs", required=True, help="image-text pair shards (directory, glob or brace pattern)")
    vision.add_argument("--tokenizer", required=True, help="tokenizer directory for the text tower")
    vision.add_argument("--out", required=True)
    vision.add_argument("--image-size", type=int, default=64)
    vision.add_argument("--width", type=int, default=256, help="feature width of the encoder")
    vision.add_argument("--batch-size", type=int, default=64)
    _add_config_args(vision, ContrastiveConfig)
    vision.set_defaults(func=run_vision)
    lm = stages.add_parser("lm", help="pretrain a small Llama-architecture LM on text files (one document a line)")
    lm.add_argument("--text", nargs="+", required=True)
    lm.add_argument("--out", required=True)
    lm.add_argument("--tokenizer", help="existing tokenizer directory (default: train a byte-level BPE)")
    lm.add_argument("--vocab-size", type=int, default=2048)
    _add_config_args(lm, LMConfig)
    lm.set_defaults(func=run_lm)
