"""Generation speed: our three caches against the strategies of existing implementations.

Times, on the small config with a 4-shot VQA-style prompt (5 images), batch 4, 3 beams, 20 new tokens:
  (i)   all caches: vision + resampler once per image, visual K/V once per prompt, LM KV cache;
  (ii)  LM KV cache only, media encoded once per *beam* and visual K/V re-projected at every step
        (the strategy of the best-known open implementation);
  (iii) no cache at all: every step recomputes the whole sequence, images included.
Each mode runs in its own process so that its peak memory (max RSS, or CUDA max allocated) is its own.

    python benchmarks/generation.py [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small import IMAGE_SIZE, build_small_flamingo  # noqa: E402

MODES = {
    "all_caches": dict(use_cache=True, cache_media=True),
    "lm_cache_only": dict(use_cache=True, cache_media=False),
    "no_cache": dict(use_cache=False, cache_media=False),
}
SHOT = "<image>Question: what colour is the square? Answer: red<|endofchunk|>"
PROMPT = SHOT * 4 + "<image>Question: what colour is the circle? Answer:"


def run_mode(mode: str, repeats: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as root:
        model = build_small_flamingo(root).to(device).eval()
    tok = model.tokenizer
    tok.padding_side = "left"
    prompts = [PROMPT, "a" + PROMPT, PROMPT.replace("red", "blue"), PROMPT + " the"]
    enc = tok(prompts, padding=True, return_tensors="pt").to(device)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(4, 5, 1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g).to(device)
    kwargs = dict(
        pixel_values=pixels, num_beams=3, max_new_tokens=20, min_new_tokens=20, eos_token_id=[], **MODES[mode]
    )
    model.generate(enc.input_ids, enc.attention_mask, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 0})  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(enc.input_ids, enc.attention_mask, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    assert out.shape[1] == enc.input_ids.shape[1] + 20
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "mode": mode,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_bytes": peak,
        "prompt_tokens": enc.input_ids.shape[1],
        "tokens": out[:, -20:].tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # internal: one mode, JSON out
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.repeats, args.device)))
        return
    results = {}
    for mode in MODES:
        repeats = args.repeats if mode != "no_cache" else max(1, args.repeats // 2)
        cmd = [sys.executable, __file__, "--mode", mode, "--repeats", str(repeats), "--device", args.device]
        results[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    same = all(r["tokens"] == results["all_caches"]["tokens"] for r in results.values())
    print(
        f"device {args.device}, torch threads {torch.get_num_threads()}, prompt "
        f"{results['all_caches']['prompt_tokens']} tokens, 5 images x batch 4, 3 beams, 20 new tokens"
    )
    print(f"{'mode':<16}{'median s':>10}{'peak MiB':>10}")
    for mode, r in results.items():
        print(f"{mode:<16}{r['median_s']:>10.3f}{r['peak_bytes'] / 2**20:>10.0f}")
    base = results["all_caches"]["median_s"]
    print(f"(ii)/(i)  lm_cache_only / all_caches = {results['lm_cache_only']['median_s'] / base:.2f}x  (target >= 3)")
    print(f"(iii)/(i) no_cache / all_caches      = {results['no_cache']['median_s'] / base:.2f}x")
    print(f"identical outputs across modes: {same}")


if __name__ == "__main__":
    main()
