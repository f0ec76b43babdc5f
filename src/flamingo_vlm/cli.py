"""The ``flamingo`` command.

Each subcommand lives next to the code it drives — a recipe (``flamingo_vlm.recipes.*``) or a component's
tool (``flamingo_vlm.<area>.cli``) — and exposes ``register(subparsers)``; this file only lists them, so a
subcommand can be read in one place. ``flamingo run RECIPE CONFIG [--nproc-per-node N]`` runs any recipe;
``flamingo train``/``eval``/``demo``/``pretrain`` are its familiar spellings.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from flamingo_vlm.config import ConfigError

SUBCOMMAND_MODULES = (
    "flamingo_vlm.recipes",  # run, config show
    "flamingo_vlm.recipes.demo",
    "flamingo_vlm.recipes.train",
    "flamingo_vlm.recipes.evaluate",
    "flamingo_vlm.recipes.pretrain",
    "flamingo_vlm.recipes.generate",
    "flamingo_vlm.recipes.serve",
    "flamingo_vlm.data.cli",
    "flamingo_vlm.convert.cli",
    "flamingo_vlm.world.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flamingo", description="Flamingo visual language models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and err.name.startswith("flamingo_vlm"):
                continue  # that area is not part of this installation yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options too (`flamingo demo --out x a=1`): argparse's "*" positional
    # only takes the first run of them.
    if extra and (not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = [*getattr(args, "overrides", []), *extra]
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"flamingo {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
