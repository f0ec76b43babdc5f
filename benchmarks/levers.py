"""Which departures from the paper make a frozen pretrained LM start to see, on the same budget?

Each variant trains a fresh Flamingo on a ShapesWorld's full mixture (web pages λ 1.0, pairs 0.2,
videos 0.03) for the same number of steps with the same batches, then is scored on the world's
*held-out* pairs (``eval/pairs``): the caption NLL with the right images, and how much worse it gets
when each image is swapped for another pair's (*shuffled*) or blanked (*blank*). Gates and each
block's update relative to the residual stream are reported as well. The paper's recipe is one
learning rate for everything, paper-style block outputs, every dataset from step 0.

    flamingo world generate --out runs/world-quick --preset quick
    flamingo convert gguf smollm2-135m-instruct --out runs/smollm2
    python -c "from flamingo_vlm.model.efficientnet import EfficientNetLiteEncoder as E; \
        e = E.from_package('efficientnet-lite0'); e.image_size = 128; e.save_pretrained('runs/efficientnet-lite0-128')"
    python benchmarks/levers.py --world runs/world-quick --lm runs/smollm2 --vision runs/efficientnet-lite0-128 \
        --steps 100 --seeds 0 1 --out runs/levers [--variants paper gates_lr ...]

Writes ``OUT/<variant>-s<seed>.json`` per run (reused when present) and prints the comparison table
(mean over seeds, each seed's values in brackets).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from flamingo_vlm.config import apply_override
from flamingo_vlm.model.vision_use import mean_vision_use
from flamingo_vlm.train import TrainConfig, Trainer
from flamingo_vlm.train.build import build_mixture, build_model, heldout_batches
from flamingo_vlm.train.config import DatasetConfig

# Each variant: key=value overrides of the base config (see base_config); {phase} is a third of the steps.
PAIRS_FIRST = ["data.datasets.0.start_step={phase}", "data.datasets.2.start_step={phase}", "data.datasets.1.weight=1.0"]
GATES_LR, RESIDUAL, LATENTS = (
    "optim.lr_multipliers={{gates: 100}}",
    "model.xattn_residual_scale=true",
    "model.resampler_latent_std=0.02",
)
OPEN_GATES = "model.xattn_gate_init=1.0"
COMBINED = [GATES_LR, RESIDUAL, *PAIRS_FIRST, LATENTS]
PAIRS_ONLY = ["data.datasets.0.start_step={steps}", "data.datasets.2.start_step={steps}", "data.datasets.1.weight=1.0"]
# The levers are compared on every seed; the further candidates (CANDIDATES) on the first seed only.
VARIANTS: dict[str, list[str]] = {
    "paper": [],
    "gates_lr": [GATES_LR],
    "residual_scale": [RESIDUAL],
    "pairs_first": PAIRS_FIRST,
    "small_latents": [LATENTS],
    "three_levers": [GATES_LR, RESIDUAL, *PAIRS_FIRST],
    "combined": COMBINED,
    # pairs only, the whole budget (web pages and videos would join after the last step)
    "paper_pairs_only": [*PAIRS_ONLY],
    "combined_pairs_only": [GATES_LR, RESIDUAL, LATENTS, *PAIRS_ONLY],
    "combined_pairs_2of3": [GATES_LR, RESIDUAL, LATENTS, *(o.replace("{phase}", "{two_thirds}") for o in PAIRS_FIRST)],
    # further candidates, each on top of the combined levers on pairs only
    "pairs_only_fp32": [GATES_LR, RESIDUAL, LATENTS, *PAIRS_ONLY, "precision=fp32"],
    "pairs_only_frozen_rows": [
        GATES_LR,
        RESIDUAL,
        LATENTS,
        *PAIRS_ONLY,
        "model.train_new_tokens=false",
        "model.cross_attn_offset=4",
    ],
    "pairs_only_every10": [GATES_LR, RESIDUAL, LATENTS, *PAIRS_ONLY, "model.cross_attn_every=10"],
    "combined_frozen_rows": [*COMBINED, "model.train_new_tokens=false", "model.cross_attn_offset=4"],
    # open gates with zero-initialised branch outputs instead of closed gates (+ a fast gate lr)
    "open_gates": [OPEN_GATES],
    "open_gates_combined": [OPEN_GATES, RESIDUAL, *PAIRS_FIRST, LATENTS],
    "open_gates_pairs_only": [OPEN_GATES, RESIDUAL, LATENTS, *PAIRS_ONLY],
}
CANDIDATES = ("combined_pairs_2of3", "pairs_only_fp32", "pairs_only_every10", "combined_frozen_rows")


def base_config(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    world = Path(args.world) / "train"
    return {
        "model": {
            "lm": args.lm,
            "vision": args.vision,
            "num_latents": 32,
            "resampler_depth": 2,
            "resampler_heads": 8,
            "resampler_dim_head": 64,
            "resampler_ff_mult": 2,
            "xattn_heads": 8,
            "xattn_dim_head": 64,
            "xattn_ff_mult": 2,
            "cross_attn_every": 5,
            "max_frames": 8,
        },
        "data": {
            "seed": 0,
            "datasets": [
                {
                    "name": "web",
                    "type": "interleaved",
                    "shards": str(world / "web"),
                    "weight": 1.0,
                    "batch_size": args.web_batch,
                    "max_length": 64,
                    "max_images": 3,
                    "p_next": 0.0,
                },
                {
                    "name": "pairs",
                    "type": "image_text",
                    "shards": str(world / "pairs"),
                    "weight": 0.2,
                    "batch_size": args.pairs_batch,
                    "max_length": 32,
                },
                {
                    "name": "videos",
                    "type": "video_text",
                    "shards": str(world / "videos"),
                    "weight": 0.03,
                    "batch_size": 2,
                    "max_length": 32,
                    "num_frames": 4,
                },
            ],
        },
        "optim": {"lr": args.lr, "warmup_steps": max(1, args.steps // 10), "schedule": "cosine", "min_lr_ratio": 0.1},
        "checkpoint": {"every": 10**9, "keep_last": 1},
        "logging": {"progress": args.progress, "probe_every": 0},
        "output_dir": str(out),
        "max_steps": args.steps,
        "precision": "bf16",
        "feature_cache": args.feature_cache,
        "device": "cpu",
    }


def score(model, world: Path, batch_size: int) -> dict[str, Any]:
    """The vision-use probe over every held-out pair (``WORLD/eval/pairs``)."""
    spec = DatasetConfig("heldout", "image_text", str(world / "eval" / "pairs"), max_length=32)
    batches = heldout_batches(spec, model, batch_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        use = mean_vision_use(model, batches)
    return {
        "nll": use.nll,
        "gap_shuffled": use.gap_shuffled,
        "gap_blank": use.gap_blank,
        "attn_gates": use.attn_gates,
        "ff_gates": use.ff_gates,
        "update_ratios": use.update_ratios,
        "heldout_pairs": sum(int(b["input_ids"].shape[0]) for b in batches),
    }


def run(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    out = Path(args.out) / f"{variant}-s{seed}"
    data = base_config(args, out)
    overrides = [
        o.format(phase=args.steps // 3, two_thirds=2 * args.steps // 3, steps=args.steps) for o in VARIANTS[variant]
    ]
    for override in overrides + [f"seed={seed}", f"data.seed={seed}"]:
        apply_override(data, override)
    config = TrainConfig.from_dict(data)
    model = build_model(config)
    trainer = Trainer(model, config, build_mixture(config, model))
    start = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - start
    model.eval()
    result = {
        "variant": variant,
        "seed": seed,
        "overrides": overrides,
        "steps": config.max_steps,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(summary["train_time_s"] / config.max_steps, 3),
        "final_losses": summary["final_losses"],
        **score(model, Path(args.world), args.eval_batch),
    }
    return result


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: mean over seeds, with the per-seed values in brackets."""
    rows = [
        "| variant | held-out NLL | gap vs shuffled | gap vs blank | max tanh(α_attn) | max tanh(α_ff) "
        "| median update/residual | s/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        if not runs:
            continue

        def cell(key, fmt="{:.2f}", get=None, runs=runs):
            values = [get(r) if get else r[key] for r in runs]
            return fmt.format(statistics.fmean(values)) + " (" + " / ".join(fmt.format(v) for v in values) + ")"

        rows.append(
            f"| {variant} | {cell('nll')} | {cell('gap_shuffled')} | {cell('gap_blank')} | "
            f"{cell('', '{:.3f}', lambda r: max(abs(g) for g in r['attn_gates']))} | "
            f"{cell('', '{:.2f}', lambda r: max(abs(g) for g in r['ff_gates']))} | "
            f"{cell('', '{:.3f}', lambda r: statistics.median(r['update_ratios']))} | "
            f"{cell('seconds_per_step')} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--lm", required=True)
    parser.add_argument("--vision", default="efficientnet-lite0")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--candidate-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--web-batch", type=int, default=4)
    parser.add_argument("--pairs-batch", type=int, default=16)
    parser.add_argument("--eval-batch", type=int, default=20)
    parser.add_argument("--feature-cache", default=None, help="directory for cached frozen vision features")
    parser.add_argument("--out", default="runs/levers")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    results = []
    for variant in args.variants:
        for seed in args.candidate_seeds if variant in CANDIDATES else args.seeds:
            path = Path(args.out) / f"{variant}-s{seed}.json"
            if path.is_file():
                results.append(json.loads(path.read_text()))
                continue
            result = run(args, variant, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            results.append(result)
            print(
                f"{variant} seed {seed}: nll {result['nll']:.3f}, gap shuffled {result['gap_shuffled']:+.3f}, "
                f"blank {result['gap_blank']:+.3f}, {result['seconds_per_step']:.2f} s/step",
                flush=True,
            )
            gc.collect()
    print(table(results))


if __name__ == "__main__":
    main()
