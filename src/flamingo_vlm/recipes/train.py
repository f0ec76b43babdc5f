"""``flamingo train CONFIG.yaml [key=value ...] [--resume]``: train Flamingo on a λ-weighted data mixture.

On N processes: ``flamingo run train CONFIG.yaml --nproc-per-node N`` (DDP, or FSDP2 with ``strategy=fsdp``).
``flamingo train [CONFIG.yaml] --estimate-memory [--gpus N] [--layout 3b|9b|80b]`` prints the per-GPU memory the
run would need (:mod:`flamingo_vlm.train.memory_estimate`) and trains nothing.
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


ESTIMATE_PRESET = "flamingo-paper"  # --estimate-memory without a config: the paper's data and optimiser


def estimate(args: argparse.Namespace) -> int:
    from flamingo_vlm.recipes import resolve_config
    from flamingo_vlm.train.memory_estimate import report

    config = resolve_config("train", args.config or ESTIMATE_PRESET, args.overrides)
    print(report(config, args.gpus, args.layout))
    return 0


def run(args: argparse.Namespace) -> int:
    from flamingo_vlm.recipes import launch_distributed, resolve_config

    if args.estimate_memory:
        return estimate(args)
    if args.config is None:
        print("flamingo train: a config is required (a YAML file or a preset from configs/train/)", file=sys.stderr)
        return 2
    overrides = args.overrides + (["resume=true"] if args.resume else [])
    if args.nproc_per_node > 1:
        return launch_distributed(["run", "train", args.config, *overrides], args.nproc_per_node)
    return main(resolve_config("train", args.config, overrides))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train Flamingo on a λ-weighted data mixture",
        description="Train the resampler, gated cross-attention blocks and new token rows of a Flamingo.",
    )
    parser.add_argument("config", nargs="?", help="YAML training config or preset (see configs/train/)")
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
    parser.add_argument(
        "--estimate-memory",
        action="store_true",
        help="print the per-GPU memory this config needs (weights, optimiser, activations, FSDP sharding) and exit",
    )
    parser.add_argument("--gpus", type=int, default=8, help="--estimate-memory: GPUs the run is spread over")
    parser.add_argument(
        "--layout",
        choices=("3b", "9b", "80b"),
        help="--estimate-memory: the paper's Flamingo-3B/9B/80B shapes instead of the config's model",
    )
    parser.set_defaults(func=run)
