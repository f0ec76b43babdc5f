"""Evaluation throughput with 1 and 2 ranks: `flamingo eval` and `torchrun --nproc_per_node 2 -m flamingo_vlm eval`.

The quick ShapesWorld world's VQAv2 set (100 questions, 300 support examples, 64-pixel images) is evaluated by a
random Flamingo of the quick demo's size (NFNet 64 px + a 4-layer, 128-wide Llama LM, a gated block per layer),
4-shot, 3 beams, batches of 8. Three runs, each in its own processes:

- 1 rank, every core (what `flamingo eval` does on a CPU machine);
- 1 rank, 1 thread (the per-rank budget of a CPU torchrun: torchrun sets OMP_NUM_THREADS=1);
- 2 ranks (gloo), 1 thread each.

Throughput is predictions per second of evaluation (model loading excluded, from each run's ``timing.json``);
the wall time of the whole command is printed too. The 1-thread single rank and the 2 ranks must write the same
``results.json``, byte for byte (checked). On a GPU machine, use one rank per GPU instead (``--device cuda``).

    python benchmarks/eval_scaling.py [--examples 100] [--shots 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
WORDS = "question answer what colour shape how many is the a red green blue yellow square circle triangle star"


def build_model(root: Path) -> Path:
    """A random Flamingo of the quick demo's size, saved in full (nothing to download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from flamingo_vlm import Flamingo
    from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
    from flamingo_vlm.tokenization import train_bpe_tokenizer

    torch.manual_seed(0)
    words = WORDS.split()
    tokenizer = train_bpe_tokenizer([" ".join(words[i:] + words[:i]) for i in range(len(words))] * 8, 1024)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=1024,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    )
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    NFNetEncoder(
        NFNetConfig(image_size=64, stem_width=32, widths=(32, 64, 128), depths=(1, 1, 1), hidden_size=128)
    ).save_pretrained(root / "vision")
    model = Flamingo.from_components(
        str(root / "lm"),
        str(root / "vision"),
        cross_attn_every=1,
        num_latents=16,
        resampler_depth=2,
        resampler_heads=4,
        resampler_dim_head=32,
        xattn_heads=4,
        xattn_dim_head=32,
    )
    with torch.no_grad():  # open gates: the images change the answers, as in a trained model
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    model.save_pretrained(root / "model", full=True)
    return root / "model"


def write_vqav2(root: Path) -> Path:
    """The quick world's VQAv2 set only (the world's other sets and training corpora are not needed here)."""
    from flamingo_vlm.world.benchmarks import BENCHMARKS
    from flamingo_vlm.world.generate import WorldConfig
    from flamingo_vlm.world.scene import RenderConfig

    config = WorldConfig(preset="quick", render=RenderConfig(image_size=64))
    writer, splits = BENCHMARKS["vqav2"]
    writer(root / "vqav2", config.evaluation_seed, config.sizes.split_sizes("vqav2", splits), config.render)
    return root / "vqav2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv: list[str], ranks: int, threads: int | None, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    launcher = [sys.executable, "-m", "flamingo_vlm"]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}"]
        launcher += [f"--master_port={free_port()}", "-m", "flamingo_vlm"]
    start = time.perf_counter()
    done = subprocess.run([*launcher, *argv, "--output", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{ranks} rank(s) failed:\n{done.stderr[-4000:]}")
    return {**json.loads((out / "timing.json").read_text()), "wall_seconds": round(wall, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="VQAv2 questions evaluated (the quick world has 100)")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data = build_model(root), write_vqav2(root / "data")
        argv = ["eval", "--model", str(model), "--task", "vqav2", "--data-root", str(data)]
        argv += ["--shots", str(args.shots), "--trials", "1", "--max-examples", str(args.examples)]
        argv += ["--batch-size", "8", "--num-beams", "3", "--vqa-normalization", "normalize_both"]
        argv += ["--no-progress", "--device", args.device, "--cache-dir", str(root / "cache")]
        cores = torch.get_num_threads()
        runs = {
            "1 rank, 1 thread": run(argv, 1, 1, root / "one"),
            "2 ranks, 1 thread each": run(argv, 2, 1, root / "two"),
            f"1 rank, {cores} threads": run(argv, 1, None, root / "one-all"),
        }
        same = (root / "one" / "results.json").read_bytes() == (root / "two" / "results.json").read_bytes()

    print("| run | predictions | eval s | predictions/s | wall s (with start-up and loading) |\n|---|---|---|---|---|")
    for name, t in runs.items():
        print(
            f"| {name} | {t['predictions_made']} | {t['eval_seconds']:.1f} | {t['predictions_per_second']:.2f} "
            f"| {t['wall_seconds']:.1f} |"
        )
    two = runs["2 ranks, 1 thread each"]["predictions_per_second"]
    print(f"\n2 ranks / 1 rank (1 thread): {two / runs['1 rank, 1 thread']['predictions_per_second']:.2f}x")
    every = runs[f"1 rank, {cores} threads"]["predictions_per_second"]
    print(f"2 ranks / 1 rank ({cores} threads): {two / every:.2f}x")
    print(f"results.json of 1 rank (1 thread) and 2 ranks byte-identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
