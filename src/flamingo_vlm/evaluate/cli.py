"""``flamingo eval``: few-shot evaluation of a saved model on benchmark files as published."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from flamingo_vlm.evaluate.tasks import TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="few-shot evaluation on benchmark files (VQA, captioning, HatefulMemes, classification, video QA)",
        description="Evaluate a saved Flamingo model few-shot. Several tasks in one call share the loaded model.",
    )
    p.add_argument("--model", required=True, help="directory written by Flamingo.save_pretrained")
    p.add_argument("--task", nargs="+", required=True, choices=sorted(TASKS), metavar="NAME",
                   help=f"one or more of: {', '.join(sorted(TASKS))}")  # fmt: skip
    p.add_argument("--data-root", nargs="+", required=True, metavar="DIR",
                   help="one directory per task, or one directory holding a sub-directory per task name")  # fmt: skip
    p.add_argument("--shots", nargs="+", type=int, default=[0, 4, 8, 16, 32])
    p.add_argument("--trials", type=int, default=3, help="seeded trials per shot count (mean ± std reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rices", action="store_true", help="choose support examples by vision-feature similarity")
    p.add_argument("--media-ablation", choices=("none", "blank", "shuffle"), default="none",
                   help="baseline with the same prompts: blank every image, or show each query another query's "
                        "(support images stay)")  # fmt: skip
    p.add_argument("--blind", dest="media_ablation", action="store_const", const="blank",
                   help="short for --media-ablation blank")  # fmt: skip
    p.add_argument("--ensembles", type=int, default=1, help="support orderings averaged (close-ended tasks)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-beams", type=int, default=3)
    p.add_argument("--max-examples", type=int, default=None, help="score only the first N eval examples")
    p.add_argument("--template", action="append", default=[], metavar="TASK=TEMPLATE",
                   help="override a task's template, e.g. 'coco=<image>A photo of {answer}<|endofchunk|>'")  # fmt: skip
    p.add_argument("--eval-split", default=None, help="override the eval split name (single task only)")
    p.add_argument("--support-split", default=None, help="override the support split name (single task only)")
    p.add_argument("--cache-dir", default=".cache/flamingo_rices", help="where RICES features are cached")
    p.add_argument("--output", default="eval_results", help="directory for results.json and predictions.jsonl")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _data_roots(tasks: list[str], roots: list[str]) -> list[Path]:
    if len(roots) == len(tasks):
        return [Path(r) for r in roots]
    if len(roots) == 1:
        root = Path(roots[0])
        return [root / t if (root / t).is_dir() else root for t in tasks]
    raise ValueError(f"give one --data-root, or one per task ({len(tasks)}), not {len(roots)}")


def _templates(pairs: list[str], tasks: list[str]) -> dict[str, str]:
    templates = {}
    for pair in pairs:
        name, sep, template = pair.partition("=")
        if not sep or name not in tasks:
            raise ValueError(f"--template must be TASK=TEMPLATE with TASK one of {tasks}, got {pair!r}")
        templates[name] = template
    return templates


def _config(args: argparse.Namespace, tasks: list[str]):
    """The run's config; ValueError on inconsistent arguments."""
    from flamingo_vlm.evaluate.runner import EvalConfig

    if (args.eval_split or args.support_split) and len(tasks) > 1:
        raise ValueError("--eval-split/--support-split apply to a single task")
    return EvalConfig(
        shots=tuple(args.shots),
        trials=args.trials,
        seed=args.seed,
        rices=args.rices,
        ensembles=args.ensembles,
        batch_size=args.batch_size,
        num_beams=args.num_beams,
        max_examples=args.max_examples,
        templates=_templates(args.template, tasks),
        eval_split=args.eval_split,
        support_split=args.support_split,
        cache_dir=args.cache_dir,
        media_ablation=args.media_ablation,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from flamingo_vlm import Flamingo, FlamingoProcessor
    from flamingo_vlm.evaluate.report import markdown_table, write_results
    from flamingo_vlm.evaluate.runner import Evaluator, config_dict
    from flamingo_vlm.evaluate.tasks import get_task

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tasks = list(dict.fromkeys(args.task))
    try:
        config, roots = _config(args, tasks), _data_roots(tasks, args.data_root)
    except ValueError as err:
        print(f"flamingo eval: {err}", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = Flamingo.from_pretrained(args.model).to(device)
    evaluator = Evaluator(model, FlamingoProcessor.from_model(model), config)

    task_results, predictions = {}, []
    for name, root in zip(tasks, roots):
        result, rows = evaluator.evaluate(get_task(name), root)
        task_results[name] = result
        predictions += rows
    results = {"model": str(args.model), "config": config_dict(config), "tasks": task_results}
    path = write_results(args.output, results, predictions)
    print(markdown_table(task_results.values()))
    print(f"\nwrote {path} and {path.with_name('predictions.jsonl')}")
    return 0
