"""``flamingo eval``: few-shot evaluation of a saved model on benchmark files as published.

The run is an :class:`EvalRecipeConfig` (a YAML file with ``--config``, ``key=value`` overrides); the flags
are short spellings of its keys (``--shots 0 4`` is ``eval.shots=[0,4]``), applied last.

It runs on one process or on N (``--nproc-per-node N``, or ``torchrun --nproc_per_node N -m flamingo_vlm eval``;
gloo on CPU, NCCL on GPUs): each rank predicts its shard of every task's queries into its own log under
``<output>/prediction_logs/``, and rank 0 merges the logs and writes ``results.json``. The logs make every run
resumable (``--resume``); see :mod:`flamingo_vlm.evaluate.prediction_log`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flamingo_vlm.evaluate.metrics.vqa import VQA_NORMALIZATIONS
from flamingo_vlm.evaluate.runner import EvalConfig
from flamingo_vlm.evaluate.tasks import PAPER_BENCHMARKS, TASKS
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
    resume: bool = False  # continue the predictions logged under output/ (same fingerprint only)
    overwrite: bool = False  # discard predictions logged under output/ (without either: refused)
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
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite (--resume/--overwrite) exclude each other")

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


LOG_DIR = "prediction_logs"


WORLD_TASKS = set(TASKS) - {*PAPER_BENCHMARKS, "imagenet"}


def fingerprint(config: EvalRecipeConfig, roots: list[Path], device_type: str) -> dict[str, Any]:
    """What must be equal for logged predictions to be reused: the model's content, the data, how it is run.

    Left out: where the output goes, the progress bar, the RICES cache's place, and the number of ranks
    (predictions do not depend on it).
    """
    from flamingo_vlm.evaluate.prediction_log import checkpoint_hash
    from flamingo_vlm.evaluate.runner import config_dict

    settings = {k: v for k, v in config_dict(config.eval).items() if k not in ("progress", "cache_dir")}
    return {
        "model_sha256": checkpoint_hash(config.model),
        "lm_dtype": config.lm_dtype,
        "device_map": config.device_map,
        "device": device_type,
        "tasks": list(config.tasks),
        "data_root": [str(r) for r in roots],
        "eval": settings,
    }


def main(config: EvalRecipeConfig) -> int:
    import torch

    from flamingo_vlm import Flamingo, FlamingoProcessor
    from flamingo_vlm.evaluate.prediction_log import PredictionLog, PredictionLogError, Shard, barrier
    from flamingo_vlm.evaluate.report import markdown_table, write_results
    from flamingo_vlm.evaluate.runner import Evaluator, config_dict
    from flamingo_vlm.evaluate.tasks import get_task
    from flamingo_vlm.io import write_text
    from flamingo_vlm.train.distributed import setup, teardown

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    roots = config.roots()
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    env = setup(device, timeout=timedelta(hours=24))  # a resumed rank may wait long for one with more left to do
    try:
        if env.world_size > 1 and config.device_map:
            raise ValueError("device_map spreads one model over the GPUs: use it with one process, not several")
        log = PredictionLog(
            Path(config.output) / LOG_DIR,
            fingerprint(config, roots, env.device.type),
            Shard(env.rank, env.world_size),
        )
        log.check(config.resume, config.overwrite)  # every rank, before rank 0 changes anything
    except (ValueError, PredictionLogError) as err:
        print(f"flamingo eval: {err}", file=sys.stderr)
        teardown()
        return 2
    barrier()
    if env.is_main:
        log.prepare(config.overwrite)
    barrier()
    log.open()
    logged = sum(len(unit) for name in config.tasks for unit in log.records(name).values())

    model = Flamingo.from_pretrained(config.model, lm_dtype=config.lm_dtype, device_map=config.device_map)
    model = model.place(None if model.lm_spread else env.device)
    evaluator = Evaluator(model, FlamingoProcessor.from_model(model), config.eval)
    loaded = time.perf_counter()

    task_results, predictions = {}, []
    for name, root in zip(config.tasks, roots):
        scored = evaluator.evaluate(get_task(name), root, log)
        if scored is not None:
            task_results[name], rows = scored
            predictions += rows
    log.close()
    if env.is_main:
        results = {"model": str(config.model), "config": config_dict(config.eval), "tasks": task_results}
        path = write_results(config.output, results, predictions)
        now = time.perf_counter()
        made = sum(len(unit) for name in config.tasks for unit in log.records(name).values()) - logged
        timing = {
            "world_size": env.world_size,
            "seconds": round(now - start, 3),
            "load_seconds": round(loaded - start, 3),
            "eval_seconds": round(now - loaded, 3),
            "predictions_made": made,
            "predictions_resumed": logged,
            "predictions_per_second": round(made / max(now - loaded, 1e-9), 3),
        }
        write_text(json.dumps(timing, indent=2) + "\n", Path(config.output) / "timing.json")
        print(markdown_table(task_results.values()))
        print(f"\nwrote {path}, {path.with_name('predictions.jsonl')} and {path.with_name('timing.json')}")
    teardown()
    return 0


def launch(config: EvalRecipeConfig, nproc_per_node: int) -> int:
    """``flamingo eval --nproc-per-node N``: the resolved config, run by N ranks through torchrun's launcher."""
    import tempfile

    import yaml

    from flamingo_vlm.config import config_to_dict
    from flamingo_vlm.recipes import launch_distributed

    with tempfile.TemporaryDirectory(prefix="flamingo-eval-") as tmp:
        path = Path(tmp) / "eval.yaml"
        path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        return launch_distributed(["eval", "--config", str(path)], nproc_per_node)


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
        help=f"one or more of the paper's 16 benchmarks ({', '.join(PAPER_BENCHMARKS)}), image-folder "
        f"classification (imagenet) or ShapesWorld's own ({', '.join(sorted(WORLD_TASKS))})",
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
    config_flag(
        p,
        "--resume",
        key="resume",
        action="store_const",
        const=True,
        help="continue the predictions logged under --output by a killed or stopped run with the same model, data "
        "and settings (refused if they differ); without logs, start afresh",
    )
    config_flag(
        p,
        "--overwrite",
        key="overwrite",
        action="store_const",
        const=True,
        help="discard the predictions logged under --output (without --resume or --overwrite they are refused)",
    )
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="evaluate with N processes on this node (torchrun; one per GPU, gloo on CPU): queries are sharded",
    )


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
    if args.nproc_per_node > 1:
        return launch(config, args.nproc_per_node)
    return main(config)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="few-shot evaluation on benchmark files (VQA, captioning, HatefulMemes, classification, video QA)",
        description="Evaluate a saved Flamingo model few-shot. Several tasks in one call share the loaded model.",
    )
    add_arguments(p)
    p.set_defaults(func=run)
