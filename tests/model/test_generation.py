"""Cached generation equals uncached recomputation; scoring equals a plain forward."""

from __future__ import annotations

import pytest
import torch
from tiny import IMAGE_SIZE, tiny_flamingo_kwargs

from flamingo_vlm import Flamingo

PROMPTS = [
    "<image>Output: a red square.<|endofchunk|><image>Output:",
    "<image>Question: what colour? Answer:",
]


@pytest.fixture(scope="module")
def model(lm_dirs, vision_dirs) -> Flamingo:
    torch.manual_seed(0)
    m = Flamingo.from_components(lm_dirs["llama"], vision_dirs["nfnet"], **tiny_flamingo_kwargs()).eval()
    with torch.no_grad():  # open the gates so that images matter
        for blk in m.language_model.gated_xattn:
            blk.attn_gate.fill_(0.9)
            blk.ff_gate.fill_(0.5)
        m.language_model.new_tokens.output.normal_(0, 0.5)  # let <|endofchunk|> compete with text tokens
    return m


def prompt_batch(model, prompts=PROMPTS, side="left"):
    model.tokenizer.padding_side = side
    enc = model.tokenizer(prompts, padding=True, return_tensors="pt")
    counts = (enc.input_ids == model.media_token_id).sum(1)
    n = int(counts.max())
    g = torch.Generator().manual_seed(1)
    return dict(
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        pixel_values=torch.randn(len(prompts), n, 1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
        media_mask=torch.arange(n) < counts[:, None],
    )


def test_every_cached_greedy_step_matches_a_full_forward(model):
    batch = prompt_batch(model)
    out = model.generate(**batch, max_new_tokens=8, return_dict_in_generate=True, eos_token_id=[])
    prompt_len = batch["input_ids"].shape[1]
    assert out.sequences.shape[1] == prompt_len + 8
    with torch.no_grad():
        for step, step_logits in enumerate(out.logits):
            seq = out.sequences[:, : prompt_len + step]
            mask = torch.cat([batch["attention_mask"], torch.ones(2, step, dtype=torch.long)], dim=1)
            full = model(seq, mask, batch["pixel_values"], media_mask=batch["media_mask"]).logits[:, -1]
            torch.testing.assert_close(step_logits, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_equals_uncached(model, num_beams):
    batch = prompt_batch(model)
    kw = dict(max_new_tokens=6, num_beams=num_beams)
    cached = model.generate(**batch, **kw)
    assert torch.equal(cached, model.generate(**batch, **kw, use_cache=False))
    assert torch.equal(cached, model.generate(**batch, **kw, cache_media=False))


@torch.no_grad()
def test_cached_decoder_prefills_once_then_steps_like_recomputation(model):
    """Beams of one prompt share its prefill; each cached one-token step equals recomputing everything."""
    from flamingo_vlm.model.generation import CachedDecoder, UncachedDecoder

    batch = prompt_batch(model)
    ids, mask, beams = batch["input_ids"], batch["attention_mask"], 2
    media = (batch["pixel_values"], None, batch["media_mask"])
    cached, uncached = CachedDecoder(model, ids, mask, media, beams), UncachedDecoder(model, ids, mask, media, beams)
    seqs, mask = ids.repeat_interleave(beams, dim=0), mask.repeat_interleave(beams, dim=0)  # (B, T)
    logits, expected = cached.prefill(), uncached.prefill()  # (B, V)
    for _ in range(3):
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
        seqs = torch.cat([seqs, logits.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits, expected = cached.step(seqs, mask), uncached.step(seqs, mask)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_media", [True, False])
def test_decoding_from_visual_tokens_equals_decoding_from_pixels(model, cache_media):
    """A prompt whose media were resampled beforehand (what the server does) decodes exactly as from pixels;
    visual tokens with too few media slots for a row's <image> tokens are refused by name."""
    from flamingo_vlm.model.generation import CachedDecoder

    batch = prompt_batch(model)
    ids, mask, beams = batch["input_ids"], batch["attention_mask"], 2
    media = (batch["pixel_values"], None, batch["media_mask"])
    with torch.no_grad():
        tokens = model.encode_media(ids, *media)  # (b, n, L, d)
        from_pixels = CachedDecoder(model, ids, mask, media, beams, cache_media)
        from_tokens = CachedDecoder(model, ids, mask, (None, None, None), beams, cache_media, visual_tokens=tokens)
        torch.testing.assert_close(from_tokens.prefill(), from_pixels.prefill())
        seqs, mask = ids.repeat_interleave(beams, dim=0), mask.repeat_interleave(beams, dim=0)
        seqs = torch.cat([seqs, seqs[:, -1:]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        torch.testing.assert_close(from_tokens.step(seqs, mask), from_pixels.step(seqs, mask))
        with pytest.raises(ValueError, match="media slots"):
            CachedDecoder(model, ids, mask[:, :-1], (None, None, None), visual_tokens=tokens[:, :1]).prefill()
        with pytest.raises(ValueError, match="visual_tokens has shape"):
            CachedDecoder(model, ids, mask[:, :-1], (None, None, None), visual_tokens=tokens[0]).prefill()


def test_beam_search_with_one_beam_is_greedy(model):
    """generate() routes num_beams=1 to greedy; the beam-search code path must agree with it."""
    from flamingo_vlm.model.generation import _beam_search, _processors, _Stopper

    batch = prompt_batch(model)
    stop = [model.eoc_token_id, model.tokenizer.eos_token_id]
    media = (batch["pixel_values"], None, batch["media_mask"])
    beam = _beam_search(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        media,
        6,
        1,
        1.0,
        _processors(0, 0, stop, 1.0, 0, False, 1.0, None, None),
        _Stopper(model.tokenizer, stop, []),
        model.tokenizer.pad_token_id,
        True,
        True,
    )
    greedy = model.generate(**batch, max_new_tokens=6)
    assert torch.equal(beam[:, : greedy.shape[1]], greedy)
    assert (beam[:, greedy.shape[1] :] == model.tokenizer.pad_token_id).all()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_left_padded_generation_equals_rows_alone(model, num_beams):
    batch = prompt_batch(model)
    together = model.generate(**batch, max_new_tokens=6, num_beams=num_beams)
    prompt_len = batch["input_ids"].shape[1]
    for row in range(2):
        valid = batch["attention_mask"][row].bool()
        n = int(batch["media_mask"][row].sum())
        alone = model.generate(
            batch["input_ids"][row : row + 1, valid],
            pixel_values=batch["pixel_values"][row : row + 1, :n],
            max_new_tokens=6,
            num_beams=num_beams,
        )
        new_alone = alone[0, valid.sum() :]
        new_together = together[row, prompt_len : prompt_len + len(new_alone)]
        assert torch.equal(new_alone, new_together)


def test_each_image_is_encoded_once_with_beams(model):
    batch = prompt_batch(model)
    seen = []
    handle = model.vision.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    try:
        model.generate(**batch, max_new_tokens=5, num_beams=3)
    finally:
        handle.remove()
    assert sum(seen) == int(batch["media_mask"].sum()) == 3


def test_generation_stops_at_end_of_chunk_and_pads(model):
    batch = prompt_batch(model)
    out = model.generate(**batch, max_new_tokens=30, eos_token_id=model.eoc_token_id, min_new_tokens=2)
    prompt_len = batch["input_ids"].shape[1]
    for row in out[:, prompt_len:].tolist():
        if model.eoc_token_id in row:
            end = row.index(model.eoc_token_id)
            assert end >= 1  # min_new_tokens=2 holds the stop token back for the first two steps
            assert all(t == model.tokenizer.pad_token_id for t in row[end + 1 :])
        assert model.media_token_id not in row


def test_stop_strings_and_sampling(model):
    batch = prompt_batch(model)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = model.generate(**batch, max_new_tokens=6, do_sample=True, top_k=20, top_p=0.9, temperature=0.7, generator=g1)
    b = model.generate(**batch, max_new_tokens=6, do_sample=True, top_k=20, top_p=0.9, temperature=0.7, generator=g2)
    assert torch.equal(a, b)
    text = model.tokenizer.decode(a[0, batch["input_ids"].shape[1] :])
    if len(text) > 1:
        stop = text[1]
        out = model.generate(
            **batch,
            max_new_tokens=6,
            do_sample=True,
            top_k=20,
            top_p=0.9,
            temperature=0.7,
            generator=torch.Generator().manual_seed(3),
            stop_strings=stop,
        )
        assert stop in model.tokenizer.decode(out[0, batch["input_ids"].shape[1] :])


def test_generate_rejects_right_padding(model):
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(**prompt_batch(model, side="right"))


def test_score_equals_plain_forward(model):
    batch = prompt_batch(model)
    tok = model.tokenizer
    texts = [[" red", " a blue circle", " no"], [" green square", " yes"]]
    candidates = [[tok(t, add_special_tokens=False).input_ids for t in row] for row in texts]
    out = model.score(**batch, candidates=candidates, candidate_batch_size=2)
    assert out.sum_logprobs.shape == (2, 3)
    assert out.sum_logprobs[1, 2] == -float("inf")
    with torch.no_grad():
        for row, cands in enumerate(candidates):
            valid = batch["attention_mask"][row].bool()
            n = int(batch["media_mask"][row].sum())
            for k, cand in enumerate(cands):
                ids = torch.cat([batch["input_ids"][row, valid], torch.tensor(cand)])[None]
                logits = model(ids, pixel_values=batch["pixel_values"][row : row + 1, :n]).logits[0].log_softmax(-1)
                start = int(valid.sum())
                expected = sum(logits[start - 1 + i, t] for i, t in enumerate(cand))
                torch.testing.assert_close(out.sum_logprobs[row, k], expected, atol=1e-4, rtol=1e-5)
                torch.testing.assert_close(out.mean_logprobs[row, k], expected / len(cand), atol=1e-4, rtol=1e-5)
