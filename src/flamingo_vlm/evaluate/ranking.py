"""Scoring many candidate continuations of one prompt: cached (the prompt once) or naive (each candidate alone).

VisDial ranks 100 answers per round and RareAct every action per positive clip, behind prompts that are
far longer than the answers (an image or video, a caption, the dialogue so far). The harness scores them
with :meth:`Flamingo.score`, which runs the prompt — vision encoder, resampler, visual keys/values and the
LM's KV cache — once, then every candidate from copies of those caches, a chunk of candidates at a time:
each candidate costs only its own tokens. :func:`candidate_logprobs` exposes both that path and the naive
one (each candidate appended to the prompt and the whole sequence run from scratch, media included, as a
model without prefix caching must), so tests can check that they agree and ``benchmarks/ranking.py`` can
time them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from flamingo_vlm.model.flamingo import Flamingo


def _naive(model: Flamingo, inputs: Mapping[str, torch.Tensor], candidates: Sequence[Sequence[int]], chunk: int):
    keep = inputs["attention_mask"][0].bool()
    prompt = inputs["input_ids"][0, keep]  # (T,)
    t = len(prompt)
    media = {k: inputs[k] for k in ("pixel_values", "vision_features", "media_mask") if inputs.get(k) is not None}
    out = torch.empty(len(candidates), dtype=torch.float32)
    for start in range(0, len(candidates), chunk):
        part = candidates[start : start + chunk]
        width = t + max(len(c) for c in part)
        ids = torch.full((len(part), width), model.tokenizer.pad_token_id, dtype=torch.long, device=prompt.device)
        mask = torch.zeros_like(ids)  # (n, width): right padding, which a causal LM never attends to
        for j, c in enumerate(part):
            ids[j, : t + len(c)] = torch.cat([prompt, torch.as_tensor(list(c), device=prompt.device)])
            mask[j, : t + len(c)] = 1
        repeated = {k: v.expand(len(part), *v.shape[1:]) for k, v in media.items()}  # the media, once per row
        logprobs = model(ids, mask, **repeated).logits.float().log_softmax(-1)  # (n, width, V)
        for j, c in enumerate(part):
            positions = torch.arange(t - 1, t - 1 + len(c), device=ids.device)
            out[start + j] = logprobs[j, positions, ids[j, t : t + len(c)]].sum().cpu()
    return out


@torch.inference_mode()
def candidate_logprobs(
    model: Flamingo,
    inputs: Mapping[str, torch.Tensor],
    candidates: Sequence[Sequence[int]],
    *,
    cached: bool = True,
    candidate_batch_size: int = 64,
) -> torch.Tensor:
    """Summed log-likelihood ``(c,)`` of each candidate's token ids continuing a one-row prompt.

    ``inputs`` is the processor's output for one prompt (``input_ids``, ``attention_mask`` and its media).
    ``cached=False`` runs prompt + candidate from scratch for every candidate, ``candidate_batch_size`` at
    a time: the reference the cached path must equal.
    """
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError(f"candidate_logprobs scores one prompt, got a batch of {inputs['input_ids'].shape[0]}")
    if not candidates or any(len(c) == 0 for c in candidates):
        raise ValueError("need at least one candidate, and no empty one")
    if not cached:
        return _naive(model, inputs, candidates, candidate_batch_size)
    scores = model.score(**inputs, candidates=[list(map(list, candidates))], candidate_batch_size=candidate_batch_size)
    return scores.sum_logprobs[0].float().cpu()
