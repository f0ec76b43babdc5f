"""Cached decoding and log-likelihood scoring for Flamingo.

Generation on a vision-language model is slow for avoidable reasons: the vision encoder re-run for
every beam, visual keys/values re-projected at every step, padding leaking into scores. Here every
prompt is processed once:

1. the vision encoder and resampler run once per image (beams share the result);
2. each gated block projects the visual tokens to keys/values once per prompt (``MediaScope.kv_cache``);
3. the LM's self-attention KV cache is filled on the un-expanded prompt, then repeated for the beams.

Each step then runs only the new token through the LM. ``use_cache=False`` and ``cache_media=False``
switch these off, for tests (cached == uncached) and for the benchmark's baselines.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from flamingo_vlm.model.language import MediaScope
from flamingo_vlm.model.masking import last_media_index, media_attention_mask, positions_from_mask

if TYPE_CHECKING:
    from flamingo_vlm.model.flamingo import Flamingo

Media = tuple[
    torch.Tensor | None, torch.Tensor | None, torch.Tensor | None
]  # pixel_values, vision_features, media_mask


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (b, T + new): prompt followed by new tokens, padded with pad_token_id
    logits: list[torch.Tensor] = field(default_factory=list)  # per step, raw (b·beams, V); greedy/sample only


@dataclass
class ScoreOutput:
    sum_logprobs: torch.Tensor  # (b, max_candidates); -inf where a row has fewer candidates
    mean_logprobs: torch.Tensor  # (b, max_candidates) sum / number of candidate tokens
    num_tokens: torch.Tensor  # (b, max_candidates) long


@dataclass
class _Prompt:
    """A prompt after prefill: what every decoding step needs."""

    logits: torch.Tensor  # (B, V) next-token logits
    cache: object  # the LM's KV cache
    media: torch.Tensor  # (B or b, n, L, d) resampled visual tokens
    kv_cache: dict | None  # per-block projected visual keys/values, or None to re-project each step
    phi: torch.Tensor  # (B,) φ of the last prompt token; new tokens keep it


def _is_left_padded(attention_mask: torch.Tensor) -> bool:
    return bool(attention_mask[:, -1].all())


def prefill(
    model: Flamingo,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None,
    vision_features: torch.Tensor | None,
    media_mask: torch.Tensor | None,
    expand: int = 1,
    cache_media: bool = True,
    visual_tokens: torch.Tensor | None = None,
) -> _Prompt:
    """Run the prompt once and return the state for continuing it ``expand`` times per row.

    With ``cache_media`` the prompt runs on its b rows and the caches are repeated afterwards;
    without it (the common open-source strategy) media are encoded and projected per copy.
    ``visual_tokens`` (b, n, L, d): the media already through :meth:`Flamingo.encode_media`, for a
    caller that encodes them its own way (the server splits a batch's images over the free CPUs).
    """
    if not cache_media and expand > 1:

        def rep(x):
            return None if x is None else x.repeat_interleave(expand, dim=0)

        input_ids, attention_mask = rep(input_ids), rep(attention_mask)
        pixel_values, vision_features, media_mask = rep(pixel_values), rep(vision_features), rep(media_mask)
        visual_tokens, expand = rep(visual_tokens), 1
    if visual_tokens is None:
        media = model.encode_media(input_ids, pixel_values, vision_features, media_mask)  # (b, n, L, d)
    else:
        media = _checked_visual_tokens(model, input_ids, visual_tokens)
    phi = last_media_index(input_ids, model.media_token_id)  # (b, T)
    attend = media_attention_mask(phi, media.shape[1], model.config.media_attention)
    kv_cache: dict | None = {} if cache_media else None
    position_ids = positions_from_mask(attention_mask)  # (b, T)
    logits, cache = model.language_model(
        input_ids,
        MediaScope(media, attend, kv_cache),
        attention_mask,
        position_ids,
        use_cache=True,
        logits_slice=slice(-1, None),
    )
    logits, phi = logits[:, -1], phi[:, -1]
    if expand > 1:
        cache.batch_repeat_interleave(expand)
        logits, phi, media = (x.repeat_interleave(expand, dim=0) for x in (logits, phi, media))
        kv_cache = {k: tuple(t.repeat_interleave(expand, dim=0) for t in kv) for k, kv in kv_cache.items()}
    return _Prompt(logits, cache, media, kv_cache, phi)


def _checked_visual_tokens(model: Flamingo, input_ids: torch.Tensor, visual_tokens: torch.Tensor) -> torch.Tensor:
    """``visual_tokens`` (b, n, L, d), once each row is known to have a slot for each of its ``<image>`` tokens."""
    b = input_ids.shape[0]
    if visual_tokens.dim() != 4 or visual_tokens.shape[0] != b:
        raise ValueError(f"visual_tokens has shape {tuple(visual_tokens.shape)}, expected (b={b}, n_media, L, d)")
    most = int((input_ids == model.media_token_id).sum(dim=1).max()) if b else 0
    if most > visual_tokens.shape[1]:
        raise ValueError(f"a row has {most} <image> tokens but visual_tokens has {visual_tokens.shape[1]} media slots")
    return visual_tokens


class _Stopper:
    """Decides whether a row's new tokens end the generation: stop ids or stop strings."""

    def __init__(self, tokenizer, stop_ids: list[int], stop_strings: list[str]) -> None:
        self.tokenizer, self.stop_ids, self.stop_strings = tokenizer, set(stop_ids), stop_strings

    def __call__(self, new_tokens: list[int]) -> bool:
        if new_tokens and new_tokens[-1] in self.stop_ids:
            return True
        if self.stop_strings:
            text = self.tokenizer.decode(new_tokens)
            return any(s in text for s in self.stop_strings)
        return False


def _processors(
    prompt_length: int,
    min_new_tokens: int,
    stop_ids: list[int],
    repetition_penalty: float,
    no_repeat_ngram_size: int,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    device: torch.device | str = "cpu",
) -> LogitsProcessorList:
    procs = LogitsProcessorList()
    if min_new_tokens > 0 and stop_ids:
        procs.append(MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, stop_ids, device=device))
    if repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if do_sample:
        if temperature != 1.0:
            procs.append(TemperatureLogitsWarper(temperature))
        if top_k:
            procs.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
    return procs


@torch.no_grad()
def generate(
    model: Flamingo,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    vision_features: torch.Tensor | None = None,
    media_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 20,
    min_new_tokens: int = 0,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    length_penalty: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    stop_strings: str | list[str] | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    cache_media: bool = True,
    return_dict_in_generate: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor | GenerationOutput:
    """Hugging Face-style generation: returns prompt + new tokens for each row (left-padded prompts)."""
    model.check_tokens(input_ids, attention_mask)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not _is_left_padded(attention_mask):
        raise ValueError("generate needs left-padded prompts (the last column of attention_mask must be all 1)")
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"num_beams ({num_beams}) and max_new_tokens ({max_new_tokens}) must be >= 1")
    if do_sample and num_beams > 1:
        raise ValueError("beam search with sampling is not supported: use num_beams=1 with do_sample=True")
    if (temperature <= 0 or (top_p is not None and not 0 < top_p <= 1)) and do_sample:
        raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1; got {temperature}, {top_p}")
    model._check_length(input_ids.shape[1] + max_new_tokens)

    if eos_token_id is None and stop_strings is None:
        stop_ids = default_stop_ids(model)
    else:
        stop_ids = (
            [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        )
    stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
    pad_token_id = model.tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    stopper = _Stopper(model.tokenizer, stop_ids, stop_strings)
    procs = _processors(
        input_ids.shape[1],
        min_new_tokens,
        stop_ids,
        repetition_penalty,
        no_repeat_ngram_size,
        do_sample,
        temperature,
        top_k,
        top_p,
        input_ids.device,
    )
    media = (pixel_values, vision_features, media_mask)

    if num_beams == 1:
        return _greedy_or_sample(
            model,
            input_ids,
            attention_mask,
            media,
            max_new_tokens,
            do_sample,
            procs,
            stopper,
            pad_token_id,
            use_cache,
            cache_media,
            return_dict_in_generate,
            generator,
        )
    sequences = _beam_search(
        model,
        input_ids,
        attention_mask,
        media,
        max_new_tokens,
        num_beams,
        length_penalty,
        procs,
        stopper,
        pad_token_id,
        use_cache,
        cache_media,
    )
    return GenerationOutput(sequences) if return_dict_in_generate else sequences


def default_stop_ids(model: Flamingo) -> list[int]:
    """Where a Flamingo answer ends: ``<|endofchunk|>``, and the tokenizer's EOS when it has one."""
    eos = model.tokenizer.eos_token_id
    return [model.eoc_token_id] + ([eos] if eos is not None else [])


class CachedDecoder:
    """Decoding with every cache: :meth:`prefill` runs the prompt and its media once, then each
    :meth:`step` runs only the newest token per row, reusing the LM's KV cache, the resampled visual
    tokens and each block's projected visual keys/values.

    ``expand`` copies per prompt row (beams) share one vision/resampler pass; with ``cache_media=False``
    media are encoded and projected per copy instead (the common open-source strategy, for benchmarks).
    """

    def __init__(
        self,
        model: Flamingo,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: Media,
        expand: int = 1,
        cache_media: bool = True,
        visual_tokens: torch.Tensor | None = None,
    ) -> None:
        self.model, self.input_ids, self.attention_mask, self.media = model, input_ids, attention_mask, media
        self.expand, self.cache_media, self.visual_tokens = expand, cache_media, visual_tokens
        self.prompt: _Prompt | None = None

    def prefill(self) -> torch.Tensor:
        """Run the prompt (b rows) with its media; next-token logits (b·expand, V) for its last token."""
        self.prompt = prefill(
            self.model,
            self.input_ids,
            self.attention_mask,
            *self.media,
            expand=self.expand,
            cache_media=self.cache_media,
            visual_tokens=self.visual_tokens,
        )
        return self.prompt.logits

    def step(
        self, sequences: torch.Tensor, attention_mask: torch.Tensor, beam_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Feed each row's newest token (B, 1) through the cached LM; next-token logits (B, V).

        ``beam_idx`` (B,): which row each row continues (beam search reorders the KV cache; the media
        caches need no reordering, since a prompt's beams share its media).
        """
        prompt, config = self.prompt, self.model.config
        if prompt is None:
            raise RuntimeError("prefill() the prompt before decoding steps")
        if beam_idx is not None:
            prompt.cache.reorder_cache(beam_idx)
        attend = media_attention_mask(prompt.phi[:, None], prompt.media.shape[1], config.media_attention)  # (B, 1, n)
        position_ids = positions_from_mask(attention_mask)[:, -1:]  # (B, 1)
        logits, prompt.cache = self.model.language_model(
            sequences[:, -1:],
            MediaScope(prompt.media, attend, prompt.kv_cache),
            attention_mask,
            position_ids,
            cache=prompt.cache,
            use_cache=True,
        )
        return logits[:, -1]


class UncachedDecoder:
    """The no-cache baseline with :class:`CachedDecoder`'s interface: every call recomputes the whole
    sequence, media re-encoded, as a model without caches must."""

    def __init__(
        self, model: Flamingo, input_ids: torch.Tensor, attention_mask: torch.Tensor, media: Media, expand: int = 1
    ) -> None:
        self.model, self.input_ids, self.attention_mask, self.expand = model, input_ids, attention_mask, expand
        self.media = tuple(None if x is None else x.repeat_interleave(expand, dim=0) for x in media)

    def prefill(self) -> torch.Tensor:
        """Next-token logits (b·expand, V) of the prompt, each row repeated ``expand`` times."""
        return self.step(
            self.input_ids.repeat_interleave(self.expand, dim=0),
            self.attention_mask.repeat_interleave(self.expand, dim=0),
        )

    def step(
        self, sequences: torch.Tensor, attention_mask: torch.Tensor, beam_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits (B, V) of the whole sequences (B, T); ``beam_idx`` is already in them."""
        return self.model(sequences, attention_mask, *self.media).logits[:, -1]


def _decoder(
    model: Flamingo,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    media: Media,
    expand: int,
    use_cache: bool,
    cache_media: bool,
) -> CachedDecoder | UncachedDecoder:
    if use_cache:
        return CachedDecoder(model, input_ids, attention_mask, media, expand, cache_media)
    return UncachedDecoder(model, input_ids, attention_mask, media, expand)


def _suppress_media_token(model: Flamingo, logits: torch.Tensor) -> torch.Tensor:
    """A generated ``<image>`` would have no image behind it: never emit one."""
    logits[:, model.media_token_id] = -float("inf")
    return logits


def _greedy_or_sample(
    model,
    input_ids,
    attention_mask,
    media,
    max_new_tokens,
    do_sample,
    procs,
    stopper,
    pad_token_id,
    use_cache,
    cache_media,
    return_dict,
    generator,
):
    b, prompt_len = input_ids.shape
    decoder = _decoder(model, input_ids, attention_mask, media, 1, use_cache, cache_media)
    seqs, mask = input_ids, attention_mask
    finished = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    raw_logits = []
    for step in range(max_new_tokens):
        logits = (decoder.prefill() if step == 0 else decoder.step(seqs, mask)).float()  # (b, V)
        raw_logits.append(logits.clone())
        scores = procs(seqs, _suppress_media_token(model, logits))
        if do_sample:
            tokens = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
        else:
            tokens = scores.argmax(-1)
        tokens = tokens.masked_fill(finished, pad_token_id)
        seqs = torch.cat([seqs, tokens[:, None]], dim=1)
        mask = torch.cat([mask, (~finished).long()[:, None].to(mask.dtype)], dim=1)
        finished |= torch.tensor([stopper(row[prompt_len:].tolist()) for row in seqs], device=seqs.device)
        if finished.all():
            break
    return GenerationOutput(seqs, raw_logits) if return_dict else seqs


def _beam_search(
    model,
    input_ids,
    attention_mask,
    media,
    max_new_tokens,
    num_beams,
    length_penalty,
    procs,
    stopper,
    pad_token_id,
    use_cache,
    cache_media,
):
    """Standard beam search (as in Hugging Face, early_stopping=False): keep ``num_beams`` running
    hypotheses per example, move those that emit a stop token to a finished list, and stop an example
    once no running beam can beat its worst finished one."""
    b, prompt_len = input_ids.shape
    device = input_ids.device
    decoder = _decoder(model, input_ids, attention_mask, media, num_beams, use_cache, cache_media)
    seqs = input_ids.repeat_interleave(num_beams, dim=0)  # (B, T)
    mask = attention_mask.repeat_interleave(num_beams, dim=0)
    beam_scores = torch.full((b, num_beams), -1e9, device=device)
    beam_scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 1
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    beam_idx = None

    def score_of(logprob_sum: float, length: int) -> float:
        return logprob_sum / (length**length_penalty)

    for step in range(max_new_tokens):
        logits = (decoder.prefill() if step == 0 else decoder.step(seqs, mask, beam_idx)).float()  # (B, V)
        logprobs = procs(seqs, _suppress_media_token(model, logits)).log_softmax(-1)
        vocab = logprobs.shape[-1]
        candidates = (beam_scores.view(-1, 1) + logprobs).view(b, num_beams * vocab)
        top_scores, top_ids = candidates.topk(2 * num_beams, dim=-1)  # (b, 2k)
        next_beam_scores = torch.zeros(b, num_beams, device=device)
        next_tokens = torch.full((b, num_beams), pad_token_id, dtype=torch.long, device=device)
        next_src = torch.zeros(b, num_beams, dtype=torch.long, device=device)
        for i in range(b):
            if done[i]:
                next_src[i] = torch.arange(num_beams, device=device) + i * num_beams
                continue
            kept = 0
            for s, idx in zip(top_scores[i].tolist(), top_ids[i].tolist()):
                src, token = i * num_beams + idx // vocab, idx % vocab
                new_tokens = seqs[src, prompt_len:].tolist() + [token]
                if stopper(new_tokens):
                    if kept < num_beams:  # only candidates ranked among the best k may finish
                        finished[i].append((score_of(s, len(new_tokens)), new_tokens))
                    continue
                next_beam_scores[i, kept], next_tokens[i, kept], next_src[i, kept] = s, token, src
                kept += 1
                if kept == num_beams:
                    break
            finished[i] = sorted(finished[i], key=lambda h: -h[0])[:num_beams]
            best_running = next_beam_scores[i].max().item()
            if len(finished[i]) == num_beams and finished[i][-1][0] >= score_of(best_running, step + 1):
                done[i] = True
        beam_idx = next_src.view(-1)
        beam_scores = next_beam_scores
        seqs = torch.cat([seqs[beam_idx], next_tokens.view(-1, 1)], dim=1)
        mask = torch.cat([mask[beam_idx], torch.ones_like(mask[:, :1])], dim=1)
        if all(done):
            break
    # Examples still running at the length limit: their running beams are candidates too.
    for i in range(b):
        if not done[i]:
            for k in range(num_beams):
                tokens = seqs[i * num_beams + k, prompt_len:].tolist()
                finished[i].append((score_of(beam_scores[i, k].item(), len(tokens)), tokens))
    best = [max(hyps, key=lambda h: h[0])[1] for hyps in finished]
    width = max(len(t) for t in best)
    out = torch.full((b, prompt_len + width), pad_token_id, dtype=torch.long, device=device)
    out[:, :prompt_len] = input_ids
    for i, tokens in enumerate(best):
        out[i, prompt_len : prompt_len + len(tokens)] = torch.tensor(tokens, dtype=torch.long, device=device)
    return out


# ---------------------------------------------------------------------------------------------
# Scoring


@torch.no_grad()
def score(
    model: Flamingo,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    vision_features: torch.Tensor | None = None,
    media_mask: torch.Tensor | None = None,
    *,
    candidates: list[list[list[int]]],
    candidate_batch_size: int = 64,
) -> ScoreOutput:
    """Log-likelihood of each row's candidate continuations given its (left-padded) prompt.

    The prompt (vision, resampler, LM) runs once per row; all (row, candidate) pairs then run
    together, ``candidate_batch_size`` at a time, from copies of the prompt's caches.
    """
    model.check_tokens(input_ids, attention_mask)
    b = input_ids.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not _is_left_padded(attention_mask):
        raise ValueError("score needs left-padded prompts (the last column of attention_mask must be all 1)")
    if len(candidates) != b:
        raise ValueError(f"candidates has {len(candidates)} rows for a batch of {b}")
    pairs = [(row, cand) for row, cands in enumerate(candidates) for cand in cands]
    for row, cand in pairs:
        if not cand:
            raise ValueError(f"row {row} has an empty candidate")
        if model.media_token_id in cand:
            raise ValueError(f"row {row} has a candidate containing the <image> token")
    longest = max((len(c) for _, c in pairs), default=0)
    model._check_length(input_ids.shape[1] + longest)
    prompt = prefill(model, input_ids, attention_mask, pixel_values, vision_features, media_mask)
    prompt_logprobs = prompt.logits.float().log_softmax(-1)  # (b, V): the first candidate token

    n_cands = max((len(c) for c in candidates), default=0)
    sums = torch.full((b, n_cands), -float("inf"), device=input_ids.device)
    lengths = torch.zeros((b, n_cands), dtype=torch.long, device=input_ids.device)
    slot = [k for cands in candidates for k in range(len(cands))]
    for start in range(0, len(pairs), candidate_batch_size):
        chunk = pairs[start : start + candidate_batch_size]
        rows = torch.tensor([r for r, _ in chunk], device=input_ids.device)
        width = max(len(c) for _, c in chunk)
        tokens = torch.full(
            (len(chunk), width), model.tokenizer.pad_token_id, dtype=torch.long, device=input_ids.device
        )
        valid = torch.zeros((len(chunk), width), dtype=torch.bool, device=input_ids.device)
        for j, (_, c) in enumerate(chunk):
            tokens[j, : len(c)] = torch.tensor(c, device=input_ids.device)
            valid[j, : len(c)] = True
        cache = copy.deepcopy(prompt.cache)
        cache.batch_select_indices(rows.cpu())  # CPU indices index a cache on any device (device_map)
        mask = torch.cat([attention_mask[rows], torch.ones_like(tokens)], dim=1)  # padding comes last: harmless
        start_pos = attention_mask[rows].long().sum(-1, keepdim=True)  # (n, 1)
        position_ids = start_pos + torch.arange(width, device=input_ids.device)
        attend = media_attention_mask(
            prompt.phi[rows, None].expand(-1, width), prompt.media.shape[1], model.config.media_attention
        )
        kv = {k: tuple(t[rows.to(t.device)] for t in v) for k, v in prompt.kv_cache.items()}  # on each block's device
        logits, _ = model.language_model(
            tokens, MediaScope(prompt.media[rows], attend, kv), mask, position_ids, cache=cache, use_cache=True
        )
        logprobs = torch.cat([prompt_logprobs[rows, None], logits[:, :-1].float().log_softmax(-1)], dim=1)
        token_lp = logprobs.gather(-1, tokens[..., None]).squeeze(-1).masked_fill(~valid, 0.0)  # (n, w)
        for j, (row, _) in enumerate(chunk):
            k = slot[start + j]
            sums[row, k] = token_lp[j].sum()
            lengths[row, k] = valid[j].sum()
    return ScoreOutput(sums, sums / lengths.clamp(min=1), lengths)
