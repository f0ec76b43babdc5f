"""GPU readiness: one prepared script that runs, on one device, every path a GPU run depends on.

    python benchmarks/gpu_check.py                      # cuda, the benchmarks' small model (< 5 min on a GPU)
    python benchmarks/gpu_check.py --device cpu         # the same checks on CPU, tiny model (the test suite)

Checks, each a row of the printed table (PASS / FAIL, a detail, seconds); the exit status is 1 when any fails:

- ``bf16_train``: a few optimiser steps under bf16 autocast (frozen parts stored in bf16, as the trainer
  does): every loss and gradient norm finite, no step skipped, trainable weights still fp32 and updated;
- ``fp32_vs_cpu``: fp32 logits on the device equal the CPU model's (TF32 off), and so do greedy tokens;
- ``caches``: greedy and beam-search generation with every cache equal uncached recomputation and the
  per-beam media strategy; ``score`` (cached prompt + candidates) equals log-likelihoods from plain forwards;
- ``device_map``: the frozen LM split by a ``device_map`` (layer 0, embeddings and head on the device, the
  other layers offloaded to CPU memory, which accelerate streams to the GPU for each call; on a CPU run,
  offloaded to disk): every gated block runs on its layer's execution device, and logits, greedy/beam tokens
  and scores equal the unsplit model's (two GPUs would put layers on two compute devices; one cannot);
- ``fsdp2_step``: FSDP2 (``fully_shard``) steps in a single-process process group (NCCL on CUDA, gloo
  on CPU) give the losses of the unsharded trainer on the same batches, and update the weights;
- ``eval_shapesworld``: few-shot evaluation (beam search and ranking) on the tiny ShapesWorld preset's
  VQAv2 and HatefulMemes files: every query evaluated, metrics finite.

On CPU ``fp32_vs_cpu`` compares the CPU with itself; its row says so. Random weights, built locally: no
download.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small import build_small_flamingo  # noqa: E402

from flamingo_vlm import Flamingo  # noqa: E402
from flamingo_vlm.model.masking import last_media_index  # noqa: E402

# LM + ViT sizes (benchmarks/small.py keywords) and Flamingo sizes per preset.
SIZES = {
    "small": ({}, {}),  # the benchmarks' small model: 256-wide, 4 layers, 224 px, paper-default resampler
    "tiny": (
        dict(hidden_size=32, num_layers=2, num_heads=2, image_size=32, patch_size=8),
        dict(
            num_latents=4, resampler_depth=1, resampler_heads=2, resampler_dim_head=8, xattn_heads=2, xattn_dim_head=8
        ),
    ),
}
TEXTS = [
    "<image>Question: what colour is the square? Answer: red<|endofchunk|><image>Question: what colour is it? Answer:",
    "a grey star<image>Output: two green triangles move left of the blue circle.",
]


@dataclass
class Result:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class Context:
    device: torch.device
    model: Flamingo  # fp32, on the CPU: the reference
    checkpoint: Path  # the same model saved: every check loads its own copy
    root: Path  # scratch directory

    def on_device(self) -> Flamingo:
        """A fresh copy on the device. Not ``copy.deepcopy``: the gated blocks run from hooks on the LM's
        layers that belong to the original model, so a deep copy's blocks would never run."""
        return Flamingo.from_pretrained(self.checkpoint).to(self.device).eval()

    def batch(self, padding_side: str = "right") -> dict[str, torch.Tensor]:
        """TEXTS with random images, on the device; ``labels`` cover text after the first image."""
        tok = self.model.tokenizer
        tok.padding_side = padding_side
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        counts = (enc.input_ids == self.model.media_token_id).sum(1)
        n_media = int(counts.max())
        size = self.model.vision.image_size
        pixels = torch.randn(len(TEXTS), n_media, 1, 3, size, size, generator=torch.Generator().manual_seed(0))
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        labels = labels.masked_fill(last_media_index(enc.input_ids, self.model.media_token_id) == 0, -100)
        labels = labels.masked_fill(enc.input_ids == self.model.media_token_id, -100)
        batch = dict(
            input_ids=enc.input_ids,
            attention_mask=enc.attention_mask,
            pixel_values=pixels,
            media_mask=torch.arange(n_media) < counts[:, None],  # (b, n)
            labels=labels,
        )
        return {k: v.to(self.device) for k, v in batch.items()}


def _train_config(ctx: Context, name: str, **overrides):
    from flamingo_vlm.train.config import LoggingConfig, OptimConfig, TrainConfig

    return TrainConfig(
        optim=OptimConfig(lr=1e-3, warmup_steps=0),
        logging=LoggingConfig(progress=False, probe_every=0),
        output_dir=str(ctx.root / name),
        device=str(ctx.device),
        **overrides,
    )


def _train(ctx: Context, config, steps: int, env) -> tuple[list[float], list[float], dict[str, torch.Tensor]]:
    """``steps`` optimiser steps on the same batch; (losses, grad norms, trainable weights before)."""
    from flamingo_vlm.train import Trainer
    from flamingo_vlm.train.distributed import full_tensor

    trainer = Trainer(ctx.on_device(), config, [], env)
    before = {n: full_tensor(p.detach()).clone() for n, p in trainer.flamingo.named_parameters() if p.requires_grad}
    batch = ctx.batch()
    losses, norms = [], []
    for _ in range(steps):
        result = trainer.train_step({"check": (batch, 1.0)})
        if result.skipped:
            raise AssertionError(f"step skipped: losses {result.losses}, grad norm {result.grad_norm}")
        losses.append(result.losses["check"])
        norms.append(result.grad_norm)
    ctx.trained = trainer  # the caller inspects the trained weights
    return losses, norms, before


def check_bf16_train(ctx: Context) -> str:
    from flamingo_vlm.train.distributed import DistributedEnv

    config = _train_config(ctx, "bf16", precision="bf16", strategy="none")
    losses, norms, before = _train(ctx, config, 3, DistributedEnv(device=ctx.device))
    trainer = ctx.trained
    if trainer.autocast_dtype is not torch.bfloat16 or next(trainer.flamingo.lm.parameters()).dtype != torch.bfloat16:
        raise AssertionError("bf16 precision did not autocast / store the frozen LM in bf16")
    if not all(math.isfinite(v) for v in losses + norms):
        raise AssertionError(f"non-finite loss or grad norm: {losses}, {norms}")
    trained = dict(trainer.flamingo.named_parameters())
    if any(trained[n].dtype != torch.float32 for n in before):
        raise AssertionError("a trainable parameter is not fp32")
    if all(torch.equal(trained[n].detach(), w) for n, w in before.items()):
        raise AssertionError("no trainable weight changed")
    return "losses " + " ".join(f"{v:.3f}" for v in losses) + "; grad norms finite; trainable fp32, updated"


def _greedy(model: Flamingo, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    media = {k: batch[k] for k in ("pixel_values", "media_mask")}
    return model.generate(
        batch["input_ids"], batch["attention_mask"], **media, max_new_tokens=8, min_new_tokens=8, **kwargs
    )


def check_fp32_vs_cpu(ctx: Context) -> str:
    reference, model = ctx.model, ctx.on_device()
    right, left = ctx.batch("right"), ctx.batch("left")
    inputs = {k: v for k, v in right.items() if k != "labels"}
    with torch.no_grad():
        ours = model(**inputs).logits.float().cpu()
        theirs = reference(**{k: v.cpu() for k, v in inputs.items()}).logits
    diff = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * max(scale, 1.0)):
        raise AssertionError(f"fp32 logits differ from the CPU's by {diff:.2e} (scale {scale:.2f})")
    tokens = _greedy(model, left).cpu()
    ref_tokens = _greedy(reference, {k: v.cpu() for k, v in left.items()})
    if not torch.equal(tokens, ref_tokens):
        raise AssertionError(f"greedy tokens differ: {tokens[:, -8:].tolist()} vs {ref_tokens[:, -8:].tolist()}")
    note = " (CPU against itself: no accelerator)" if ctx.device.type == "cpu" else ""
    return f"max |Δlogit| {diff:.1e} (scale {scale:.1f}); 8 greedy tokens x {len(TEXTS)} rows equal{note}"


def check_caches(ctx: Context) -> str:
    model = ctx.on_device().eval()
    batch = ctx.batch("left")
    for beams in (1, 3):
        runs = {
            mode: _greedy(model, batch, num_beams=beams, **kw)
            for mode, kw in {
                "all_caches": dict(use_cache=True, cache_media=True),
                "lm_cache_only": dict(use_cache=True, cache_media=False),
                "no_cache": dict(use_cache=False, cache_media=False),
            }.items()
        }
        if not all(torch.equal(t, runs["all_caches"]) for t in runs.values()):
            raise AssertionError(f"{beams}-beam generation differs between cache modes: {runs}")
    tok = model.tokenizer
    candidates = [[tok(c, add_special_tokens=False).input_ids for c in (" red", " blue square", " no")]] * len(TEXTS)
    media = {k: batch[k] for k in ("pixel_values", "media_mask")}
    scored = model.score(batch["input_ids"], batch["attention_mask"], **media, candidates=candidates).sum_logprobs
    expected = torch.empty_like(scored)
    with torch.no_grad():
        for k, cand in enumerate(candidates[0]):  # the whole sequence through a plain forward, no cache
            ids = torch.cat([batch["input_ids"], torch.tensor([cand] * len(TEXTS), device=ctx.device)], 1)
            mask = torch.cat([batch["attention_mask"], torch.ones_like(ids[:, batch["input_ids"].shape[1] :])], 1)
            logprobs = model(ids, mask, **media).logits.float().log_softmax(-1)[:, -len(cand) - 1 : -1]
            expected[:, k] = logprobs.gather(-1, ids[:, -len(cand) :, None]).squeeze(-1).sum(-1)
    diff = (scored - expected).abs().max().item()
    if diff > 1e-3:
        raise AssertionError(f"cached scores differ from plain forwards by {diff:.2e}")
    return f"greedy + 3-beam: all caches == LM cache only == none; score vs forward max |Δ| {diff:.1e}"


def check_device_map(ctx: Context) -> str:
    """The frozen LM split by a device_map: layer 0 (with embeddings and head) on the device, the other layers
    offloaded to CPU memory (on a CPU run: to disk). Every gated block must run on its own layer's execution
    device, and logits, greedy/beam tokens and scores must equal the unsplit model's."""
    from flamingo_vlm.model.language import execution_device

    gpu = f"cuda:{ctx.device.index or 0}"
    here, there = (gpu, "cpu") if ctx.device.type == "cuda" else ("cpu", "disk")
    layers = len(ctx.model.lm.model.layers)
    device_map = {"model.embed_tokens": here, "model.rotary_emb": here, "model.norm": here, "lm_head": here}
    device_map |= {f"model.layers.{i}": here if i == 0 else there for i in range(layers)}
    spread = Flamingo.from_pretrained(
        ctx.checkpoint, device_map=device_map, lm_kwargs={"offload_folder": str(ctx.root / "offload")}
    ).eval()
    plain = ctx.on_device()
    if not spread.lm_spread:
        raise AssertionError(f"the LM was not split: {spread.lm.hf_device_map}")
    wrong, ran = [], []
    for block, layer_id in zip(spread.language_model.gated_xattn, spread.language_model.xattn_layer_ids):
        expected = execution_device(spread.lm.model.layers[layer_id], ctx.device)

        def record(module, args, expected=expected, layer_id=layer_id):
            ran.append(layer_id)
            if not args[0].device == module.attn_gate.device == expected:
                wrong.append((layer_id, str(args[0].device), str(module.attn_gate.device), str(expected)))

        block.register_forward_pre_hook(record)
    batch = ctx.batch("left")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ours, theirs = spread(**inputs).logits.float(), plain(**inputs).logits.float()
    diff = (ours - theirs).abs().max().item()
    if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * max(theirs.abs().max().item(), 1.0)):
        raise AssertionError(f"logits differ from the unsplit model's by {diff:.2e}")
    for beams in (1, 3):
        if not torch.equal(_greedy(spread, batch, num_beams=beams), _greedy(plain, batch, num_beams=beams)):
            raise AssertionError(f"{beams}-beam tokens differ from the unsplit model's")
    tok = plain.tokenizer
    candidates = [[tok(c, add_special_tokens=False).input_ids for c in (" red", " blue square")]] * len(TEXTS)
    media = {k: batch[k] for k in ("pixel_values", "media_mask")}
    scores = [
        m.score(batch["input_ids"], batch["attention_mask"], **media, candidates=candidates).sum_logprobs
        for m in (spread, plain)
    ]
    if not torch.allclose(*scores, atol=1e-3, rtol=0):
        raise AssertionError(f"scores differ: {scores}")
    if wrong or not ran:
        raise AssertionError(f"gated blocks off their layer's device (layer, input, block, layer device): {wrong}")
    devices = sorted({str(d) for d in spread.lm.hf_device_map.values()})
    return f"LM over {devices}; blocks on their layers' devices; logits max |Δ| {diff:.1e}, tokens and scores equal"


def check_fsdp2_step(ctx: Context) -> str:
    import torch.distributed as dist

    from flamingo_vlm.train.distributed import DistributedEnv

    env = DistributedEnv(device=ctx.device)
    precision = "bf16" if ctx.device.type == "cuda" else "fp32"
    plain, _, _ = _train(ctx, _train_config(ctx, "plain", precision=precision, strategy="none"), 2, env)
    store = dist.FileStore(str(ctx.root / "fsdp-store"), 1)
    dist.init_process_group("nccl" if ctx.device.type == "cuda" else "gloo", store=store, rank=0, world_size=1)
    try:
        sharded, norms, before = _train(ctx, _train_config(ctx, "fsdp", precision=precision, strategy="fsdp"), 2, env)
        trainer = ctx.trained
        if trainer.strategy != "fsdp" or not all(hasattr(p, "full_tensor") for p in trainer.params):
            raise AssertionError(f"the model was not sharded (strategy {trainer.strategy!r})")
        full = trainer.checkpoints.full_trainable_state(trainer.flamingo)
        changed = any(not torch.equal(full[n].cpu(), w.cpu()) for n, w in before.items() if n in full)
    finally:
        dist.destroy_process_group()
    # bf16 autocast with bf16-stored frozen weights (plain) vs fp32-stored ones (FSDP): close, not equal.
    tolerance = 5e-2 if precision == "bf16" else 1e-4
    if not all(abs(a - b) <= tolerance * max(abs(b), 1.0) for a, b in zip(sharded, plain)):
        raise AssertionError(f"FSDP2 losses {sharded} differ from unsharded {plain}")
    if not changed or not all(math.isfinite(v) for v in norms):
        raise AssertionError(f"FSDP2 step did not update the weights (grad norms {norms})")
    shown = {name: " ".join(f"{v:.4f}" for v in values) for name, values in (("fsdp", sharded), ("plain", plain))}
    return f"{precision}: losses {shown['fsdp']} vs unsharded {shown['plain']}"


def check_eval_shapesworld(ctx: Context) -> str:
    from flamingo_vlm.evaluate.runner import EvalConfig, Evaluator
    from flamingo_vlm.evaluate.tasks import get_task
    from flamingo_vlm.processing import FlamingoProcessor
    from flamingo_vlm.world.benchmarks import BENCHMARKS
    from flamingo_vlm.world.generate import WorldConfig

    world = WorldConfig(preset="tiny")
    model = ctx.on_device().eval()
    config = EvalConfig(
        shots=(0, 2),
        trials=1,
        batch_size=4,
        num_beams=3,
        progress=False,
        cache_dir=str(ctx.root / "rices"),
        vqa_normalization="normalize_both",
    )
    evaluator = Evaluator(model, FlamingoProcessor.from_model(model), config)
    details = []
    for task, metric in (("vqav2", "vqa_accuracy"), ("hateful_memes", "roc_auc")):
        writer, splits = BENCHMARKS[task]
        writer(ctx.root / "world" / task, world.evaluation_seed, world.sizes.split_sizes(task, splits), world.render)
        result, rows = evaluator.evaluate(get_task(task), ctx.root / "world" / task)
        if result["num_evaluated"] != result["num_queries"] or len(rows) != 2 * result["num_queries"]:
            raise AssertionError(f"{task}: {result['num_evaluated']} of {result['num_queries']} queries evaluated")
        values = [result["shots"][s]["mean"][metric] for s in ("0", "2")]
        if not all(math.isfinite(v) for v in values):
            raise AssertionError(f"{task}: non-finite {metric} {values}")
        details.append(f"{task} {result['num_queries']} queries {metric} {values[0]:.1f}/{values[1]:.1f}")
    return "; ".join(details) + " (0/2 shots, random weights)"


CHECKS: dict[str, Callable[[Context], str]] = {
    "bf16_train": check_bf16_train,
    "fp32_vs_cpu": check_fp32_vs_cpu,
    "caches": check_caches,
    "device_map": check_device_map,
    "fsdp2_step": check_fsdp2_step,
    "eval_shapesworld": check_eval_shapesworld,
}


def run_checks(device: torch.device, size: str, names: list[str]) -> list[Result]:
    # Exact fp32 comparisons: TF32 matmuls would round to 10 mantissa bits.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    lm_sizes, flamingo_sizes = SIZES[size]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_small_flamingo(Path(tmp) / "parts", sizes=lm_sizes, **flamingo_sizes).eval()
        model.save_pretrained(Path(tmp) / "checkpoint")
        ctx = Context(device, model, Path(tmp) / "checkpoint", Path(tmp))
        for name in names:
            start = time.perf_counter()
            try:
                detail, ok = CHECKS[name](ctx), True
            except Exception as err:  # a failed check is a table row, not the end of the run
                detail, ok = f"{type(err).__name__}: {err}", False
            if device.type == "cuda":
                torch.cuda.synchronize()
            results.append(Result(name, ok, detail, time.perf_counter() - start))
    return results


def format_table(results: list[Result]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  status  {'seconds':>7}  detail"]
    lines += [f"{r.name:<{width}}  {'PASS' if r.ok else 'FAIL':<6}  {r.seconds:>7.1f}  {r.detail}" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--size", choices=SIZES, help="model size; default: small on CUDA, tiny on CPU")
    parser.add_argument("--only", nargs="+", choices=CHECKS, help="run these checks only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine (use --device cpu)", file=sys.stderr)
        return 2
    size = args.size or ("small" if device.type == "cuda" else "tiny")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, model size {size}")
    start = time.perf_counter()
    results = run_checks(device, size, args.only or list(CHECKS))
    print(format_table(results))
    peak = (
        f", peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else ""
    )
    failed = [r.name for r in results if not r.ok]
    print(f"{len(results) - len(failed)}/{len(results)} passed in {time.perf_counter() - start:.1f} s{peak}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
