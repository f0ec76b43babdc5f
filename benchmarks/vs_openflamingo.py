"""Ours vs the ``open-flamingo`` package, holding the same weights: training step and generation.

OpenFlamingo's own model is built by its factory around the small config's LM and CLIP tower
(:mod:`benchmarks.small`), its gates opened, and converted with ``Flamingo.from_openflamingo``; the
two are first checked to give the same logits. Then, alternating between the two in one process:

- training step: forward + backward + AdamW on a batch of 4 interleaved sequences with 5 images each
  (theirs with its trainer's masking of the embedding gradient to the two new rows);
- generation: a 4-shot VQA-style prompt (5 images), batch 4, beam search with 3 beams, exactly 20
  new tokens (end-of-chunk suppressed until then, ``<image>`` banned in both).

Needs ``pip install --no-deps open-flamingo==2.0.1 einops einops-exts``.

    python benchmarks/vs_openflamingo.py [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import CLIPVisionModel

from flamingo_vlm import Flamingo
from flamingo_vlm.convert.openflamingo_reference import build_openflamingo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small import IMAGE_SIZE, build_small_components  # noqa: E402

SHOT = "<image>Question: what colour is the square? Answer: red<|endofchunk|>"
PROMPT = SHOT * 4 + "<image>Question: what colour is the circle? Answer:"
TRAIN_TEXT = "<image>a red square is above a blue circle<|endofchunk|>" * 5
NEW_TOKENS, BEAMS, BATCH, IMAGES = 20, 3, 4, 5


def build_pair(root: str, device: str):
    lm_dir, vision_dir = build_small_components(root)
    torch.manual_seed(0)
    theirs, _ = build_openflamingo(lm_dir, CLIPVisionModel.from_pretrained(vision_dir), cross_attn_every_n_layers=1)
    with torch.no_grad():  # open the gates, as in the small config: a trained model's images matter
        for name, param in theirs.named_parameters():
            if name.endswith("_gate"):
                param.fill_(0.5)
    ours = Flamingo.from_openflamingo(theirs.state_dict(), lm=lm_dir, vision=vision_dir)
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


def train_steps(theirs, ours: Flamingo, device: str):
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
        theirs(pixels, ids, mask, labels=labels).loss.backward()
        embed.grad.mul_(keep_rows)  # open_flamingo/train/train_utils.py: only <image>, <|endofchunk|> train
        their_opt.step()
        their_opt.zero_grad(set_to_none=True)

    def our_step():
        ours(ids, mask, pixel_values=pixels, labels=labels).loss.backward()
        our_opt.step()
        our_opt.zero_grad(set_to_none=True)

    return their_step, our_step


def generators(theirs, ours: Flamingo, device: str):
    prompts = [PROMPT, "a " + PROMPT, PROMPT.replace("red", "blue"), PROMPT + " the"][:BATCH]
    ids, mask, pixels = batch(ours, prompts, "left", device)
    theirs.eval()
    ours.eval()
    out = {}

    @torch.no_grad()
    def their_generate():
        out["theirs"] = theirs.generate(
            pixels, ids, mask, num_beams=BEAMS, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
            bad_words_ids=[[ours.media_token_id]], pad_token_id=ours.tokenizer.pad_token_id,
        )

    def our_generate():
        out["ours"] = ours.generate(ids, mask, pixel_values=pixels, num_beams=BEAMS, max_new_tokens=NEW_TOKENS,
                                    min_new_tokens=NEW_TOKENS, eos_token_id=ours.eoc_token_id)

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
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        theirs, ours = build_pair(root, args.device)
    ids, mask, pixels = batch(ours, [PROMPT, "a " + PROMPT], "left", args.device)
    with torch.no_grad():
        diff = (theirs.eval()(pixels, ids, mask).logits - ours.eval()(ids, mask, pixel_values=pixels).logits)
    max_diff = diff[mask.bool()].abs().max().item()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}; "
          f"same weights: max |logit diff| = {max_diff:.2e}")

    print(f"{'median of ' + str(args.repeats):<34} {'theirs ms':>10} {'ours ms':>10} {'speed-up':>9}")
    train = compare("training step (fwd+bwd+AdamW)", *train_steps(theirs, ours, args.device), args.repeats, args.device)
    their_gen, our_gen, out = generators(theirs, ours, args.device)
    gen = compare(f"generate {BATCH}x{BEAMS} beams, {NEW_TOKENS} tokens", their_gen, our_gen, args.repeats, args.device)
    same = torch.equal(out["theirs"], out["ours"])
    print(f"identical generated tokens: {same}")
    print(f"targets: training >= 1.5x ({'met' if train >= 1.5 else 'missed'}), "
          f"generation >= 3x ({'met' if gen >= 3 else 'missed'})")
    return 0 if same and max_diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
