"""``flamingo pretrain vision|lm [--config FILE] [key=value ...] [flags]``: make the frozen parts when none
can be downloaded (recipes :mod:`~flamingo_vlm.recipes.pretrain_vision`, :mod:`~flamingo_vlm.recipes.pretrain_lm`)."""

from __future__ import annotations

import argparse

from flamingo_vlm.recipes import config_from_args, recipe


def run(args: argparse.Namespace) -> int:
    name = f"pretrain-{args.stage}"
    return recipe(name).main(config_from_args(name, args.config, args.overrides, args))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pretrain", help="pretrain a vision encoder or an LM to freeze")
    stages = parser.add_subparsers(dest="stage", required=True)
    helps = {
        "vision": "contrastive pretraining of the built-in NFNet encoder",
        "lm": "pretrain a small Llama-architecture LM on text files (one document a line)",
    }
    for stage, help in helps.items():
        sub = stages.add_parser(stage, help=help)
        sub.add_argument("--config", help="a YAML config (flags and key=value override it)")
        sub.add_argument("overrides", nargs="*", metavar="key=value")
        recipe(f"pretrain-{stage}").add_arguments(sub)
        sub.set_defaults(func=run)
