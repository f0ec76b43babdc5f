"""Ranking cost: 100 candidate answers behind one VisDial-style prompt, cached against naive.

  cached: :meth:`Flamingo.score` — the prompt (vision encoder, resampler, visual K/V, LM KV cache) runs
          once, then every candidate from copies of its caches, ``--chunk`` candidates at a time;
  naive:  every candidate appended to the prompt and the whole sequence run from scratch, image included
          (what a model without prefix caching does), in chunks of the same size.

Both give the same scores (checked here, and in tests/evaluate/test_tasks_ranking.py). Small config
(benchmarks/small.py: CLIP-style ViT and a 256 × 4 Llama, random weights).

    python benchmarks/ranking.py [--candidates 100] [--rounds 9] [--chunk 50] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small import build_small_flamingo  # noqa: E402

from flamingo_vlm import FlamingoProcessor  # noqa: E402
from flamingo_vlm.evaluate.ranking import candidate_logprobs  # noqa: E402

WORDS = "red square blue circle two green triangles left grey star yes no above".split()


def visdial_prompt(rounds: int) -> str:
    """An image, its caption and ``rounds`` earlier question–answer rounds, then the question asked."""
    history = "".join(
        f"Question: is the {WORDS[i % 13]} {WORDS[(i + 3) % 13]}? Answer: {WORDS[i % 2 + 11]}. " for i in range(rounds)
    )
    return f"<image>a red square above a blue circle. {history}Question: what colour is the star? Answer:"


def answers(n: int) -> list[str]:
    """``n`` distinct short answers (1–4 words), as VisDial's options are."""
    return [" " + " ".join(WORDS[(i + k * 5) % 13] for k in range(1 + i % 4)) + f" {i}<|endofchunk|>" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9, help="earlier dialogue rounds in the prompt")
    parser.add_argument("--chunk", type=int, default=50, help="candidates per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (1 on a shared machine: oversubscribed threads hit "
        "the cached path's many small operations far harder than the naive path's large ones)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as root:
        model = build_small_flamingo(root).to(args.device).eval()
    processor = FlamingoProcessor.from_model(model)
    image = Image.new("RGB", (224, 224), (200, 40, 40))
    inputs = processor([visdial_prompt(args.rounds)], images=[[image]], padding_side="left")
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    candidates = processor.tokenize_candidates([answers(args.candidates)])[0]
    prompt_tokens = int(inputs["input_ids"].shape[1])
    candidate_tokens = sum(len(c) for c in candidates)

    times, scores = {}, {}
    for mode in ("cached", "naive"):
        runs = []
        for _ in range(args.repeats + 1):  # the first is a warm-up
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            scores[mode] = candidate_logprobs(
                model, inputs, candidates, cached=mode == "cached", candidate_batch_size=args.chunk
            )
            if args.device == "cuda":
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - start)
        times[mode] = statistics.median(runs[1:])
    diff = (scores["cached"] - scores["naive"]).abs().max().item()
    print(
        json.dumps(
            {
                "device": args.device,
                "candidates": args.candidates,
                "prompt_tokens": prompt_tokens,
                "candidate_tokens_total": candidate_tokens,
                "lm_tokens_cached": prompt_tokens + candidate_tokens,
                "lm_tokens_naive": args.candidates * prompt_tokens + candidate_tokens,
                "image_encodes_cached": 1,
                "image_encodes_naive": args.candidates,
                "seconds_cached": round(times["cached"], 4),
                "seconds_naive": round(times["naive"], 4),
                "speedup": round(times["naive"] / times["cached"], 2),
                "max_abs_score_difference": diff,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
