"""Recipes: short scripts that wire the library's components together (as in torchtune).

Every recipe is a module with the same three names, so one launcher runs any of them:

- ``Config`` — a dataclass built from the components' own config sections, read from YAML
  (:func:`flamingo_vlm.config.load_config`: ``extends:``, ``key=value`` overrides, checked types);
- ``DEFAULT_CONFIG`` — the preset a bare ``flamingo run RECIPE`` uses (a name under ``configs/<recipe>/``), or None;
- ``main(config) -> int`` — the run itself.

The library never imports a recipe; recipes import the library.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from flamingo_vlm.config import ConfigError, apply_override, build_config, config_to_dict, load_config, set_path

RECIPES = {
    "pretrain-vision": "flamingo_vlm.recipes.pretrain_vision",
    "pretrain-lm": "flamingo_vlm.recipes.pretrain_lm",
    "train": "flamingo_vlm.recipes.train",
    "eval": "flamingo_vlm.recipes.evaluate",
    "demo": "flamingo_vlm.recipes.demo",
}

# The repository's configs/, reached through the package's configs link (a wheel ships the files themselves).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def recipe(name: str) -> ModuleType:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[name])


def find_config(recipe_name: str, name_or_path: str) -> Path:
    """A YAML path as given, else the preset ``configs/<recipe>/<name>.yaml``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset = CONFIG_DIR / recipe_name / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    known = sorted(p.stem for p in (CONFIG_DIR / recipe_name).glob("*.yaml"))
    raise ConfigError(f"no {recipe_name} preset {name_or_path!r}; known: {', '.join(known) or 'none'} (or give a path)")


def resolve_config(name: str, config: str | None, overrides: list[str]) -> Any:
    """The recipe's config: a file or preset (or the recipe's default preset, or its defaults), then overrides."""
    module = recipe(name)
    config = config or module.DEFAULT_CONFIG
    if config is None:
        data: dict[str, Any] = {}
        for override in overrides:
            apply_override(data, override)
        return build_config(module.Config, data)
    return load_config(module.Config, find_config(name, config), overrides)


# ---------------------------------------------------------------------------------------------------------------------
# Familiar flags as config overrides: a flag whose dest is "cfg:<dotted key>" sets that key when given.


def config_flag(parser: argparse.ArgumentParser, *flags: str, key: str, **kwargs: Any) -> None:
    """``--flag`` as a short spelling of ``key=value``; unset flags leave the config alone."""
    parser.add_argument(*flags, dest=f"cfg:{key}", default=argparse.SUPPRESS, **kwargs)


def flag_data(args: argparse.Namespace) -> dict[str, Any]:
    """``{dotted key: value}`` of the config flags the user gave."""
    return {k.removeprefix("cfg:"): v for k, v in vars(args).items() if k.startswith("cfg:")}


def config_from_args(name: str, config: str | None, overrides: list[str], args: argparse.Namespace) -> Any:
    """File or preset, then ``key=value`` overrides, then the familiar flags (most specific last)."""
    module = recipe(name)
    base = resolve_config(name, config, overrides)
    data = config_to_dict(base)
    for key, value in flag_data(args).items():
        set_path(data, key, list(value) if isinstance(value, tuple) else value)
    return build_config(module.Config, data)


# ---------------------------------------------------------------------------------------------------------------------
# flamingo run RECIPE [CONFIG] [key=value ...] [--nproc-per-node N]
# flamingo config show RECIPE [CONFIG] [key=value ...]


def _split(config_and_overrides: list[str]) -> tuple[str | None, list[str]]:
    """The first word is the config unless it is already an override."""
    if config_and_overrides and "=" not in config_and_overrides[0]:
        return config_and_overrides[0], config_and_overrides[1:]
    return None, config_and_overrides


def run(args: argparse.Namespace) -> int:
    config, overrides = _split(args.overrides)
    if args.nproc_per_node > 1:
        return launch_distributed(["run", args.recipe, *args.overrides], args.nproc_per_node)
    return recipe(args.recipe).main(resolve_config(args.recipe, config, overrides))


def launch_distributed(flamingo_argv: list[str], nproc_per_node: int) -> int:
    """``flamingo <flamingo_argv>`` as one process per device on this node, through torchrun's own launcher (its
    API, not a subprocess)."""
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    torchrun_args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc_per_node}", "-m", "flamingo_vlm", *flamingo_argv]
    )
    torchrun(torchrun_args)  # raises ChildFailedError naming the failed rank
    return 0


def show(args: argparse.Namespace) -> int:
    import yaml

    config, overrides = _split(args.overrides)
    print(yaml.safe_dump(config_to_dict(resolve_config(args.recipe, config, overrides)), sort_keys=False), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    runner = subparsers.add_parser(
        "run",
        help="run any recipe from its config, on one process or N",
        description="Run a recipe (pretrain-vision, pretrain-lm, train, eval, demo) from a YAML config or preset, "
        "with key=value overrides. --nproc-per-node N launches N processes with torchrun (DDP/FSDP for training).",
    )
    runner.add_argument("recipe", choices=sorted(RECIPES))
    runner.add_argument(
        "overrides",
        nargs="*",
        metavar="[CONFIG] [key=value]",
        help="a YAML file or a preset name under configs/RECIPE/, then overrides",
    )
    runner.add_argument("--nproc-per-node", type=int, default=1, help="processes on this node (torchrun)")
    runner.set_defaults(func=run)

    config = subparsers.add_parser("config", help="print a recipe's resolved config")
    actions = config.add_subparsers(dest="action", required=True)
    shower = actions.add_parser("show", help="the config a recipe would run with, as YAML")
    shower.add_argument("recipe", choices=sorted(RECIPES))
    shower.add_argument("overrides", nargs="*", metavar="[CONFIG] [key=value]")
    shower.set_defaults(func=show)
