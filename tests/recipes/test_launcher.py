"""One configuration system: every recipe's config is a dataclass read from YAML, presets included."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flamingo_vlm.cli import main
from flamingo_vlm.config import build_config, config_to_dict, load_config
from flamingo_vlm.recipes import RECIPES, find_config, recipe, resolve_config
from flamingo_vlm.recipes.demo import DemoConfig, load_demo_config
from flamingo_vlm.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_config_is_valid_for_its_recipe(path: Path) -> None:
    config = load_config(recipe(path.parent.name).Config, path)
    assert build_config(type(config), config_to_dict(config)) == config  # round trip through plain data


def test_config_show_prints_the_resolved_config(capsys) -> None:
    assert main(["config", "show", "demo", "tiny", "train.max_steps=5", "eval.shots=[0,1]"]) == 0
    shown = build_config(DemoConfig, yaml.safe_load(capsys.readouterr().out))
    assert shown == load_demo_config("tiny", ["train.max_steps=5", "eval.shots=[0,1]"])
    assert shown.train.max_steps == 5 and shown.eval.shots == (0, 1) and shown.world == "tiny"
    assert main(["config", "show", "demo"]) == 0  # the default preset
    assert build_config(DemoConfig, yaml.safe_load(capsys.readouterr().out)) == load_demo_config("quick")


def test_extends_merges_mappings_and_replaces_lists(tmp_path) -> None:
    quick, smollm = load_demo_config("quick"), load_demo_config("smollm-quick")
    # a mapping merges: smollm-quick names no LM sizes, so quick's stay; it replaces the flamingo sizes it names
    assert smollm.lm.model == quick.lm.model and smollm.lm.pretrained == "smollm2-135m-instruct"
    assert smollm.train.model.cross_attn_every == 5 and smollm.train.model.lm == quick.train.model.lm == "lm"
    # a list is replaced whole, never merged item by item
    assert [d.start_step for d in smollm.train.data.datasets] == [110, 0, 110]
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="loops back"):
        load_config(DemoConfig, tmp_path / "a.yaml")


def test_a_typo_in_a_preset_override_is_named() -> None:
    with pytest.raises(ValueError, match=r"train\.optim\.warmup_step"):
        load_demo_config("tiny", ["train.optim.warmup_step=3"])
    with pytest.raises(ValueError, match="no demo preset 'quik'; known: full, quick, smollm, smollm-quick, tiny"):
        find_config("demo", "quik")


def test_every_recipe_resolves_without_a_file() -> None:
    for name in RECIPES:
        assert isinstance(resolve_config(name, None, []), recipe(name).Config)
    assert resolve_config("train", None, ["max_steps=7"]) == TrainConfig(max_steps=7)


def test_eval_reads_a_config_file_and_flags_override_it(tmp_path) -> None:
    from flamingo_vlm.cli import build_parser
    from flamingo_vlm.recipes.evaluate import config_from_args

    path = tmp_path / "eval.yaml"
    path.write_text("model: ckpt\ntasks: [vqav2, coco]\ndata_root: [data]\neval: {shots: [0, 4], trials: 1}\n")
    args = build_parser().parse_args(["eval", "--config", str(path), "eval.num_beams=1", "--shots", "8"])
    config = config_from_args(args)
    assert config.model == "ckpt" and config.tasks == ["vqav2", "coco"] and config.eval.trials == 1
    assert config.eval.shots == (8,) and config.eval.num_beams == 1  # the flag wins over the file
    with pytest.raises(ValueError, match="unknown task"):
        config_from_args(build_parser().parse_args(["eval", "--config", str(path), "tasks=[vqa]"]))
    assert main(["eval", "--config", str(path), "tasks=[vqav2]", "--template", "coco=<image>{answer}"]) == 2


def test_overrides_may_follow_options(capsys) -> None:
    """`flamingo demo --preset tiny key=value --out DIR key=value`: every override counts, wherever it stands."""
    assert main(["config", "show", "demo", "tiny", "train.max_steps=5", "eval.trials=2"]) == 0
    shown = build_config(DemoConfig, yaml.safe_load(capsys.readouterr().out))
    assert (shown.train.max_steps, shown.eval.trials) == (5, 2)
    from flamingo_vlm.cli import build_parser

    with pytest.raises(SystemExit):
        main(["config", "show", "demo", "tiny", "--bogus"])
    args, extra = build_parser().parse_known_args(["demo", "a=1", "--out", "x", "b=2"])
    assert args.overrides == ["a=1"] and extra == ["b=2"]  # what main() appends


def test_unreadable_yaml_configs_are_one_line_config_errors(tmp_path) -> None:
    """Deeply nested, oversized or broken YAML is a ConfigError naming the file, not a parser traceback."""
    from flamingo_vlm.config import ConfigError
    from flamingo_vlm.io import MAX_JSON_BYTES

    cases = {
        "deep.yaml": "[" * 100_000 + "]" * 100_000,
        "broken.yaml": "a: [1, 2",
        "big.yaml": "#" * MAX_JSON_BYTES + "\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=rf"{name}: not a readable YAML config"):
            load_config(DemoConfig, tmp_path / name)
