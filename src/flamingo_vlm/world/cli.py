"""``flamingo world generate``: write a ShapesWorld's training corpora and evaluation sets."""

from __future__ import annotations

import argparse
import time

from flamingo_vlm.world.generate import PRESETS, WorldConfig, generate_world
from flamingo_vlm.world.scene import RenderConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    world = subparsers.add_parser("world", help="the built-in synthetic ShapesWorld")
    commands = world.add_subparsers(dest="world_command", required=True)
    generate = commands.add_parser(
        "generate",
        help="write ShapesWorld training shards and benchmark files",
        description="Render a ShapesWorld deterministically from a seed: web pages -> web shards, image-text "
        "and video-text pair shards, LM text, and evaluation sets in the real benchmarks' formats "
        "(from a different seed).",
    )
    generate.add_argument("--out", required=True, help="output directory")
    generate.add_argument("--seed", type=int, default=0, help="seed of the training data")
    generate.add_argument("--eval-seed", type=int, default=None, help="seed of the evaluation sets (default: seed + 1)")
    generate.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="corpus sizes")
    generate.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    generate.add_argument("--no-progress", action="store_true")
    generate.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    config = WorldConfig(
        seed=args.seed, preset=args.preset, eval_seed=args.eval_seed, render=RenderConfig(image_size=args.image_size)
    )
    start = time.perf_counter()
    manifest = generate_world(args.out, config, progress=not args.no_progress)
    train = manifest["train"]
    print(train["web_build"])
    print(
        f"train: {len(train['web'])} web, {len(train['pairs'])} pair and {len(train['videos'])} video shards, "
        f"{config.sizes.text_docs} text documents (seed {config.seed})"
    )
    print(f"eval: {', '.join(manifest['eval'])} (seed {config.evaluation_seed})")
    print(f"wrote {args.out}/world.json in {time.perf_counter() - start:.1f}s")
    return 0
