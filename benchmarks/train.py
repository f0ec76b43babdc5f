"""Training throughput and model FLOP utilisation (MFU) of the small config, with a one-step profile.

The small config: a 4-stage NFNet-style vision encoder at 224 px, a Llama-style LM 256 wide × 4
layers, a 2-layer Perceiver Resampler (64 latents) and a gated block before every LM layer. Steps
run through :class:`flamingo_vlm.train.Trainer` exactly as in training (λ-weighted accumulation,
one clip, AdamW) on synthetic in-memory batches of interleaved-style sequences.

FLOPs are counted by ``torch.utils.flop_counter`` on one real step (forward + backward of every
matmul, convolution and attention that ran, frozen parts included); achieved FLOP/s divides them
by the measured step time. The peak is a large ``torch.mm`` of the training dtype with the same
thread count, measured in the same run, so MFU = achieved / peak compares like with like.

    python benchmarks/train.py [--steps 10] [--batch-size 8] [--seq-len 64] [--images 2] [--feature-cache]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from flamingo_vlm import Flamingo
from flamingo_vlm.config import FlamingoConfig
from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
from flamingo_vlm.tokenization import add_flamingo_tokens, train_bpe_tokenizer
from flamingo_vlm.train import TrainConfig, Trainer
from flamingo_vlm.train.config import CheckpointConfig, LoggingConfig, OptimConfig

WORDS = "a red square is above a blue circle and two green triangles move to the left of the grey star".split()


def small_model(image_size: int = 224) -> Flamingo:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_bpe_tokenizer([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4, vocab_size=512)
    add_flamingo_tokens(tokenizer)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vision = NFNetEncoder(
        NFNetConfig(
            image_size=image_size, stem_width=32, widths=(32, 64, 128, 256), depths=(1, 1, 1, 1), hidden_size=256
        )
    )
    config = dict(
        num_latents=64, resampler_depth=2, resampler_heads=4, resampler_dim_head=64, xattn_heads=4, xattn_dim_head=64
    )
    return Flamingo(FlamingoConfig(**config), lm, vision, tokenizer)


def synthetic_step(model: Flamingo, batch_size: int, seq_len: int, images: int, generator: torch.Generator) -> dict:
    """One mixture step with one dataset: rows of ``images`` chunks ``<image> text… <|endofchunk|>``."""
    vocab = min(model.media_token_id, model.eoc_token_id)  # plain-text ids: below the added special tokens
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)  # (b, L)
    chunk = seq_len // images
    for j in range(images):
        ids[:, j * chunk] = model.media_token_id
        ids[:, (j + 1) * chunk - 1] = model.eoc_token_id
    labels = ids.masked_fill(ids == model.media_token_id, -100)
    size = model.vision.image_size
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": torch.randn(batch_size, images, 1, 3, size, size, generator=generator),  # (b, n, t, c, h, w)
        "media_mask": torch.ones(batch_size, images, dtype=torch.bool),
    }
    return {"interleaved": (batch, 1.0)}


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square ``torch.mm`` in ``dtype``: the roofline that MFU is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        _sync(device)
        begin = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - begin)
    return 2 * n**3 / statistics.median(times)  # the same statistic as the step time


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps (after 1 warm-up step)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--images", type=int, default=2, help="images per sequence")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--feature-cache", action="store_true", help="read vision features from the on-disk cache")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile-rows", type=int, default=15)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = small_model(args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            optim=OptimConfig(warmup_steps=1),
            checkpoint=CheckpointConfig(every=10**9),
            logging=LoggingConfig(progress=False),
            output_dir=tmp,
            max_steps=args.steps + 3,
            device=str(device),
            feature_cache=f"{tmp}/features" if args.feature_cache else None,
        )
        trainer = Trainer(model, config, [])
        generator = torch.Generator().manual_seed(0)
        step = synthetic_step(model, args.batch_size, args.seq_len, args.images, generator)
        trainer.train_step(step)  # warm-up (and, with --feature-cache, fills the cache)

        with FlopCounterMode(display=False) as counter:
            trainer.train_step(step)
        flops = counter.get_total_flops()

        times = []
        for _ in range(args.steps):
            _sync(device)
            begin = time.perf_counter()
            trainer.train_step(step)
            _sync(device)
            times.append(time.perf_counter() - begin)
        seconds = statistics.median(times)  # robust to other processes stealing a core now and then

        with profile(
            activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        ) as prof:
            trainer.train_step(step)

    dtype = trainer.autocast_dtype or torch.float32
    peak = matmul_peak(dtype, device)
    achieved = flops / seconds
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = args.batch_size * args.seq_len
    print(
        f"device {device} | threads {torch.get_num_threads()} | compute dtype {dtype} | params {params / 1e6:.1f}M "
        f"({trainable / 1e6:.1f}M trainable)"
    )
    print(
        f"batch {args.batch_size} × {args.seq_len} tokens, {args.images} images of {args.image_size}px per row"
        f"{' (cached features)' if args.feature_cache else ''}"
    )
    print(
        f"step time        {seconds * 1e3:9.1f} ms "
        f"(median of {args.steps}; min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})"
    )
    print(f"samples/s        {args.batch_size / seconds:9.2f}")
    print(f"tokens/s         {tokens / seconds:9.1f}")
    print(f"model FLOPs/step {flops / 1e9:9.2f} GFLOP")
    print(f"achieved         {achieved / 1e9:9.2f} GFLOP/s")
    print(f"torch.mm peak    {peak / 1e9:9.2f} GFLOP/s ({dtype}, {torch.get_num_threads()} threads)")
    print(f"MFU              {achieved / peak:9.1%}")
    print("\nFLOPs by operator:")
    for op, count in sorted(counter.get_flop_counts()["Global"].items(), key=lambda kv: -kv[1]):
        print(f"  {str(op):45s} {count / flops:6.1%}")
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile of one step (top {args.profile_rows} ops by self time):")
    print(prof.key_averages().table(sort_by=sort_by, row_limit=args.profile_rows))


if __name__ == "__main__":
    main()
