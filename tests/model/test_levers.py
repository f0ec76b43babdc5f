"""The departures from the paper that make a frozen LM start to see (docs/results.md): each keeps
identity at initialisation, and each does what it says."""

from __future__ import annotations

import pytest
import torch
from tiny import IMAGE_SIZE, tiny_flamingo_kwargs
from transformers import AutoModelForCausalLM

from flamingo_vlm import Flamingo
from flamingo_vlm.model.flamingo import CALIBRATION_TEXTS
from flamingo_vlm.model.language import find_decoder_layers

LEVERS = [
    dict(xattn_residual_scale=True),
    dict(train_new_tokens=False),
    dict(resampler_latent_std=0.02),
    dict(xattn_gate_init=1.0),
    dict(xattn_gate_init=1.0, xattn_residual_scale=True),
    dict(xattn_residual_scale=True, train_new_tokens=False, cross_attn_offset=1, cross_attn_every=2),
]


def inputs(model: Flamingo) -> dict:
    enc = model.tokenizer(
        ["<image>Output: a red square.<|endofchunk|>", "a cat<image>Question: what colour?"],
        padding=True,
        padding_side="right",
        return_tensors="pt",
    )
    return dict(**enc, pixel_values=torch.randn(2, 1, 1, 3, IMAGE_SIZE, IMAGE_SIZE))


@pytest.mark.parametrize("levers", LEVERS)
def test_levers_keep_identity_at_initialisation(lm_dirs, vision_dirs, levers):
    model = Flamingo.from_components(lm_dirs["llama"], vision_dirs["nfnet"], **{**tiny_flamingo_kwargs(), **levers})
    bare = AutoModelForCausalLM.from_pretrained(lm_dirs["llama"]).eval()
    batch = inputs(model)
    ids = model.tokenizer(["a red square is above a blue circle."], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(
            model(**batch).logits, model(**{**batch, "pixel_values": torch.randn(2, 1, 1, 3, 32, 32)}).logits
        )
        assert torch.equal(model(ids).logits[..., : bare.config.vocab_size], bare(input_ids=ids).logits)


def test_output_scales_are_the_median_residual_rms_and_are_saved(lm_dirs, vision_dirs, tmp_path):
    model = Flamingo.from_components(
        lm_dirs["llama"], vision_dirs["nfnet"], xattn_residual_scale=True, **tiny_flamingo_kwargs()
    )
    bare = AutoModelForCausalLM.from_pretrained(lm_dirs["llama"]).eval()
    enc = model.tokenizer(list(CALIBRATION_TEXTS), padding=True, padding_side="right", return_tensors="pt")
    with torch.no_grad():
        hidden = bare(**enc, output_hidden_states=True).hidden_states  # hidden_states[l] enters layer l
    real = enc.attention_mask.bool()
    for block, layer in zip(model.language_model.gated_xattn, model.language_model.xattn_layer_ids):
        expected = hidden[layer].pow(2).mean(-1).sqrt()[real].median()
        assert block.output_scale.item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
    model.save_pretrained(tmp_path)
    restored = Flamingo.from_pretrained(tmp_path)
    for a, b in zip(model.language_model.gated_xattn, restored.language_model.gated_xattn):
        assert torch.equal(a.output_scale, b.output_scale)
    batch = inputs(model)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, restored(**batch).logits)


def test_output_scale_multiplies_the_block_update(lm_dirs, vision_dirs):
    """With the same weights, a block scaled by s moves the residual stream s times as far."""
    plain = Flamingo.from_components(lm_dirs["llama"], vision_dirs["nfnet"], **tiny_flamingo_kwargs())
    scaled = Flamingo.from_components(
        lm_dirs["llama"], vision_dirs["nfnet"], xattn_residual_scale=True, **tiny_flamingo_kwargs()
    )
    scaled.load_added_state_dict(
        {
            **plain.added_state_dict(),
            **{k: v for k, v in scaled.added_state_dict().items() if k.endswith("output_scale")},
        }
    )
    block_p, block_s = plain.language_model.gated_xattn[0], scaled.language_model.gated_xattn[0]
    with torch.no_grad():
        for block in (block_p, block_s):
            block.attn_gate.fill_(0.6)  # the feed-forward gate stays shut: its input would differ
    y = torch.randn(1, 5, plain.lm.config.hidden_size)  # (b, L, d)
    media_kv = block_p.attn.project_media(torch.randn(1, 1, 4, plain.vision.hidden_size))  # one medium, 4 latents
    attend = torch.tensor([[[False], [True], [True], [True], [True]]])  # (b, L, n_media)
    with torch.no_grad():
        delta_p, delta_s = block_p(y, media_kv, attend) - y, block_s(y, media_kv, attend) - y
    assert torch.allclose(delta_s, delta_p * block_s.output_scale, rtol=1e-5, atol=1e-6)


def test_frozen_new_rows_stop_backward_at_the_first_block(lm_dirs, vision_dirs, tmp_path):
    model = Flamingo.from_components(
        lm_dirs["llama"],
        vision_dirs["nfnet"],
        train_new_tokens=False,
        cross_attn_every=2,
        cross_attn_offset=1,
        **tiny_flamingo_kwargs(),
    )
    new = model.language_model.new_tokens
    assert not new.input.requires_grad
    eos_row = model.lm.get_input_embeddings().weight[model.tokenizer.eos_token_id]
    assert torch.equal(new.input[model.eoc_token_id - new.first_id], eos_row)  # <|endofchunk|> ← EOS
    reached = []
    layer0 = find_decoder_layers(model.lm)[0]
    layer0.register_full_backward_hook(lambda *args: reached.append(True))
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
    batch = inputs(model)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert not reached  # nothing below the first gated block (before layer 1) needs a gradient
    assert model.language_model.gated_xattn[0].attn.to_q.weight.grad is not None
    model.save_pretrained(tmp_path)  # the fixed rows are part of the checkpoint
    assert torch.equal(Flamingo.from_pretrained(tmp_path).language_model.new_tokens.input, new.input)


def test_loss_at_labelled_positions_equals_the_full_logits_loss(lm_dirs, vision_dirs):
    """return_logits=False projects only labelled rows, in recomputed chunks: same loss, same gradients."""
    model = Flamingo.from_components(lm_dirs["llama"], vision_dirs["nfnet"], **tiny_flamingo_kwargs())
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
    batch = inputs(model)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[0, :3] = -100
    full = model(**batch)
    reference = torch.nn.functional.cross_entropy(
        full.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
    )
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    out = model(**batch, labels=labels, loss_reduction="sum", return_logits=False)
    assert out.logits is None
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-6)
    out.loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, expected[name], rtol=1e-5, atol=1e-7), name
    mean = model(**batch, labels=labels).loss
    assert mean.item() == pytest.approx(reference.item() / int((labels[:, 1:] != -100).sum()), rel=1e-6)


def test_small_latents_let_the_images_dominate_the_resampled_tokens(lm_dirs, vision_dirs):
    """Latents of std 1 drown what the layers add from the media; small ones leave it the larger part."""

    def between_image_share(latent_std: float) -> float:
        torch.manual_seed(0)
        model = Flamingo.from_components(
            lm_dirs["llama"], vision_dirs["nfnet"], resampler_latent_std=latent_std, **tiny_flamingo_kwargs()
        )
        assert model.resampler.latents.std().item() == pytest.approx(latent_std, rel=0.5)
        with torch.no_grad():
            features = model.vision(torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE))  # (16, v, d)
            tokens = model.resampler(features[:, None, None]).flatten(1)  # (16, L·d)
        return (tokens.var(0).mean() / (tokens - tokens.mean()).pow(2).mean()).item()

    assert between_image_share(0.02) > 2 * between_image_share(1.0)


def test_open_gates_start_with_zero_outputs_that_learn_at_once(lm_dirs, vision_dirs):
    """xattn_gate_init: gates open, output projections zero; the first backward reaches them."""
    model = Flamingo.from_components(
        lm_dirs["llama"], vision_dirs["nfnet"], xattn_gate_init=1.0, **tiny_flamingo_kwargs()
    )
    batch = inputs(model)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model(**batch, labels=labels).loss.backward()
    for block in model.language_model.gated_xattn:
        assert block.attn_gate.item() == block.ff_gate.item() == 1.0
        assert not block.attn.to_out.weight.any() and not block.ff[-1].weight.any()
        assert block.attn.to_out.weight.grad.abs().sum() > 0 and block.ff[-1].weight.grad.abs().sum() > 0


def test_a_non_positive_latent_scale_is_refused():
    from flamingo_vlm.config import FlamingoConfig

    with pytest.raises(ValueError, match="resampler_latent_std"):
        FlamingoConfig(resampler_latent_std=0.0)
