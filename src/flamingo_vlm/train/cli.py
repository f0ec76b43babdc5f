"""``flamingo train CONFIG.yaml [key=value ...] [--resume]`` (also ``python -m flamingo_vlm.train``)."""

from __future__ import annotations

import argparse
import json
import logging

from flamingo_vlm.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML training config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config entries, e.g. optim.lr=3e-4 max_steps=100 data.datasets.0.weight=0.5")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint (same as resume=true)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train Flamingo on a λ-weighted data mixture",
        description="Train the resampler, gated cross-attention blocks and new token rows of a Flamingo. "
        "Run under torchrun for DDP/FSDP: torchrun --nproc_per_node=N -m flamingo_vlm.train CONFIG.yaml",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from flamingo_vlm.train import distributed
    from flamingo_vlm.train.build import build_mixture, build_model, build_probe_batch
    from flamingo_vlm.train.trainer import Trainer

    config = TrainConfig.load(args.config, args.overrides + (["resume=true"] if args.resume else []))
    env = distributed.setup(config.device)
    logging.basicConfig(level=logging.INFO if env.is_main else logging.WARNING,
                        format=f"[rank {env.rank}] %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        model = build_model(config)
        trainer = Trainer(model, config, build_mixture(config, model), env, probe=build_probe_batch(config, model))
        summary = trainer.fit()
    finally:
        distributed.teardown()
    if env.is_main:
        print(json.dumps(summary, indent=1))
    return 0
