"""``flamingo demo``: the paper's whole recipe on ShapesWorld, end to end, with a report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flamingo_vlm.world.recipe import PRESETS, Recipe, peak_rss_mib
from flamingo_vlm.world.report import query_command, write_report


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    start = time.perf_counter()
    recipe = Recipe(out, PRESETS[args.preset], seed=args.seed, fresh=args.fresh, progress=not args.no_progress)
    results = recipe.run()
    # Wall time of this run, plus the recorded time of the stages it reused from an earlier one.
    total = time.perf_counter() - start + sum(r["seconds"] for r in results.values() if r["reused"])
    report = write_report(out, results, args.preset, total, peak_rss_mib(), PRESETS[args.preset].targets)
    print(f"\nreport: {report}\ncheckpoint: {out / 'checkpoint'}\nquery it:\n  {query_command(out)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the whole Flamingo recipe on the built-in ShapesWorld")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="tiny: seconds (tests); quick: ≤10 min on 2 CPU cores, the world's own small LM and "
                        "encoder; full: ≈50 min; smollm-quick / smollm: real pretrained SmolLM2-135M and "
                        "EfficientNet-Lite0, ≤10 / ≤60 min")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="redo stages that already finished")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
