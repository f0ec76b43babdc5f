"""``flamingo eval``: few-shot evaluation of a saved model on benchmark files as published.

The run is an :class:`EvalRecipeConfig` (a YAML file with ``--config``, ``key=value`` overrides); the flags
are short spellings of its keys (``--shots 0 4`` is ``eval.shots=[0,4]``), applied last.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from flamingo_vlm.evaluate.metrics.vqa import VQA_NORMALIZATIONS
from flamingo_vlm.evaluate.runner import EvalConfig
from flamingo_vlm.evaluate.tasks import TASKS
from flamingo_vlm.recipes import config_flag


@dataclass
class EvalRecipeConfig:
    """What to evaluate and where; ``eval`` says how (the same for every task of the run)."""

    model: str = ""  # directory written by Flamingo.save_pretrained
    tasks: list[str] = field(default_factory=list)
    data_root: list[str] = field(default_factory=list)  # one directory per task, or one holding a folder per task
    output: str = "eval_results"  # results.json and predictions.jsonl
    device: str | None = None  # default: cuda if available, else cpu
    lm_dtype: str | None = None  # frozen LM storage dtype (auto/fp32/bf16/fp16); default: the checkpoint's
    device_map: str | None = None  # spread the frozen LM over the GPUs (accelerate: auto, balanced, sequential)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.tasks = list(dict.fromkeys(self.tasks))
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(sorted(TASKS))}")
        if (self.eval.eval_split or self.eval.support_split) and len(self.tasks) > 1:
            raise ValueError("eval.eval_split/eval.support_split (--eval-split/--support-split) apply to a single task")
        for task in self.tasks:
            TASKS[task].check_shots(self.eval.shots)  # RareAct: zero-shot only
        unknown = sorted(set(self.eval.templates) - set(self.tasks))
        if unknown:
            raise ValueError(f"templates given for task(s) {unknown} that are not evaluated ({self.tasks})")

    def roots(self) -> list[Path]:
        """Each task's data directory; ValueError when the run is incomplete."""
        if not self.model or not self.tasks:
            raise ValueError("flamingo eval needs a model and at least one task (--model/--task, or model=/tasks=)")
        if len(self.data_root) == len(self.tasks):
            return [Path(r) for r in self.data_root]
        if len(self.data_root) == 1:
            root = Path(self.data_root[0])
            return [root / t if (root / t).is_dir() else root for t in self.tasks]
        raise ValueError(f"give one data root, or one per task ({len(self.tasks)}), not {len(self.data_root)}")


Config = EvalRecipeConfig
DEFAULT_CONFIG = None


def main(config: EvalRecipeConfig) -> int:
    import torch

    from flamingo_vlm import Flamingo, FlamingoProcessor
    from flamingo_vlm.evaluate.report import markdown_table, write_results
    from flamingo_vlm.evaluate.runner import Evaluator, config_dict
    from flamingo_vlm.evaluate.tasks import get_task

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    roots = config.roots()
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = Flamingo.from_pretrained(config.model, lm_dtype=config.lm_dtype, device_map=config.device_map)
    model = model.place(None if model.lm_spread else device)
    evaluator = Evaluator(model, FlamingoProcessor.from_model(model), config.eval)

    task_results, predictions = {}, []
    for name, root in zip(config.tasks, roots):
        result, rows = evaluator.evaluate(get_task(name), root)
        task_results[name] = result
        predictions += rows
    results = {"model": str(config.model), "config": config_dict(config.eval), "tasks": task_results}
    path = write_results(config.output, results, predictions)
    print(markdown_table(task_results.values()))
    print(f"\nwrote {path} and {path.with_name('predictions.jsonl')}")
    return 0


class _Templates(argparse.Action):
    """``--template TASK=TEMPLATE`` (repeatable) → ``eval.templates``."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        name, sep, template = value.partition("=")
        if not sep or not name:
            parser.error(f"--template must be TASK=TEMPLATE, got {value!r}")
        setattr(namespace, self.dest, {**getattr(namespace, self.dest, {}), name: template})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="an EvalRecipeConfig YAML file (flags and key=value override it)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.trials=1 eval.num_beams=1")
    config_flag(p, "--model", key="model", help="directory written by Flamingo.save_pretrained")
    config_flag(
        p,
        "--task",
        key="tasks",
        nargs="+",
        choices=sorted(TASKS),
        metavar="NAME",
        help=f"one or more of: {', '.join(sorted(TASKS))}",
    )
    config_flag(
        p,
        "--data-root",
        key="data_root",
        nargs="+",
        metavar="DIR",
        help="one directory per task, or one directory holding a sub-directory per task name",
    )
    config_flag(p, "--shots", key="eval.shots", nargs="+", type=int, help="default: 0 4 8 16 32")
    config_flag(p, "--trials", key="eval.trials", type=int, help="seeded trials per shot count (mean ± std); default 3")
    config_flag(p, "--seed", key="eval.seed", type=int)
    config_flag(
        p,
        "--rices",
        key="eval.rices",
        action="store_const",
        const=True,
        help="choose support examples by vision-feature similarity",
    )
    config_flag(
        p,
        "--media-ablation",
        key="eval.media_ablation",
        choices=("none", "blank", "shuffle"),
        help="baseline with the same prompts: blank every image, or show each query another query's "
        "(support images stay)",
    )
    config_flag(
        p,
        "--blind",
        key="eval.media_ablation",
        action="store_const",
        const="blank",
        help="short for --media-ablation blank",
    )
    config_flag(
        p,
        "--vqa-normalization",
        key="eval.vqa_normalization",
        choices=VQA_NORMALIZATIONS,
        help="VQA accuracy: 'official' = vqaEval.py exactly (default; published numbers), 'normalize_both' "
        "= always normalise both answers (raw-answer sets such as ShapesWorld's)",
    )
    config_flag(p, "--ensembles", key="eval.ensembles", type=int, help="support orderings averaged (close-ended tasks)")
    config_flag(p, "--batch-size", key="eval.batch_size", type=int)
    config_flag(p, "--num-beams", key="eval.num_beams", type=int)
    config_flag(p, "--max-examples", key="eval.max_examples", type=int, help="score only the first N eval examples")
    config_flag(
        p,
        "--template",
        key="eval.templates",
        action=_Templates,
        metavar="TASK=TEMPLATE",
        help="override a task's template, e.g. 'coco=<image>A photo of {answer}<|endofchunk|>'",
    )
    config_flag(p, "--eval-split", key="eval.eval_split", help="override the eval split name (single task only)")
    config_flag(
        p, "--support-split", key="eval.support_split", help="override the support split name (single task only)"
    )
    config_flag(p, "--cache-dir", key="eval.cache_dir", help="where RICES features are cached")
    config_flag(p, "--output", key="output", help="directory for results.json and predictions.jsonl")
    config_flag(p, "--device", key="device", help="default: cuda if available, else cpu")
    config_flag(
        p,
        "--lm-dtype",
        key="lm_dtype",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="load the frozen LM in this dtype",
    )
    config_flag(
        p,
        "--device-map",
        key="device_map",
        help="spread the frozen LM over devices (accelerate: auto, balanced, sequential); the rest of the model "
        "goes to the LM's first device",
    )
    config_flag(p, "--no-progress", key="eval.progress", action="store_const", const=False)


def config_from_args(args: argparse.Namespace) -> EvalRecipeConfig:
    from flamingo_vlm.recipes import config_from_args as resolve

    return resolve("eval", args.config, args.overrides, args)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        config.roots()
    except ValueError as err:
        print(f"flamingo eval: {err}", file=sys.stderr)
        return 2
    return main(config)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="few-shot evaluation on benchmark files (VQA, captioning, HatefulMemes, classification, video QA)",
        description="Evaluate a saved Flamingo model few-shot. Several tasks in one call share the loaded model.",
    )
    add_arguments(p)
    p.set_defaults(func=run)
