"""``flamingo train CONFIG.yaml [key=value ...] [--resume]``: train Flamingo on a λ-weighted data mixture.

On N processes: ``flamingo run train CONFIG.yaml --nproc-per-node N`` (DDP, or FSDP2 with ``strategy=fsdp``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from flamingo_vlm.train.config import TrainConfig

Config = TrainConfig
DEFAULT_CONFIG = None  # a training run needs its own models and shards: see configs/train/


def main(config: TrainConfig) -> int:
    from flamingo_vlm.train import distributed
    from flamingo_vlm.train.build import build_mixture, build_model, build_probe_batch
    from flamingo_vlm.train.checkpoint import CheckpointError
    from flamingo_vlm.train.trainer import Trainer

    env = distributed.setup(config.device)
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING,
        format=f"[rank {env.rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        model = build_model(config)
        trainer = Trainer(model, config, build_mixture(config, model), env, probe=build_probe_batch(config, model))
        summary = trainer.fit()
    except CheckpointError as err:  # a full disk while saving: one line that says what to do, not a traceback
        print(f"flamingo train: {err}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()
    if env.is_main:
        print(json.dumps(summary, indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    from flamingo_vlm.recipes import launch_distributed, resolve_config

    overrides = args.overrides + (["resume=true"] if args.resume else [])
    if args.nproc_per_node > 1:
        return launch_distributed("train", [args.config, *overrides], args.nproc_per_node)
    return main(resolve_config("train", args.config, overrides))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train Flamingo on a λ-weighted data mixture",
        description="Train the resampler, gated cross-attention blocks and new token rows of a Flamingo.",
    )
    parser.add_argument("config", help="YAML training config (see configs/train/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config entries, e.g. optim.lr=3e-4 max_steps=100 data.datasets.0.weight=0.5",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint (same as resume=true)"
    )
    parser.add_argument("--nproc-per-node", type=int, default=1, help="processes on this node (torchrun)")
    parser.set_defaults(func=run)
