"""Parity with the ``open-flamingo`` package: its own model, converted, must give our logits.

Each OpenFlamingo model is built by its own factory (``create_model_and_transforms``) around a tiny
random OPT or Llama and a tiny HF CLIP tower, with every trainable weight perturbed (gates non-zero),
then converted with :func:`flamingo_vlm.convert.from_openflamingo`. Needs ``pip install --no-deps
open-flamingo==2.0.1 einops einops-exts``.
"""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch
import torch.nn.functional as F
from tiny import IMAGE_SIZE, tiny_lm_config
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

from flamingo_vlm import Flamingo, FlamingoConfig
from flamingo_vlm.cli import main as cli_main
from flamingo_vlm.convert import from_openflamingo

pytest.importorskip("einops_exts", reason="parity tests need: pip install einops einops-exts")
if importlib.util.find_spec("open_flamingo") is None:  # importing it needs open_clip, which we stand in for
    pytest.skip("parity tests need: pip install --no-deps open-flamingo==2.0.1", allow_module_level=True)
from openflamingo_reference import build_openflamingo  # noqa: E402

NUM_LAYERS = 4
TEXTS = [
    "<image>Output: a red square.<|endofchunk|><image>Output: a blue circle",
    "a cat<image>Question: what colour? Answer: green<|endofchunk|><image>two<image>Output:",
    "the dax is<image>a",
]
N_MEDIA = 3


@pytest.fixture(scope="module")
def lm_paths(tmp_path_factory, tokenizer_dir) -> dict[str, str]:
    """4-layer random LMs; Llama's tokenizer has no pad token (so OpenFlamingo adds ``<PAD>``)."""
    paths = {}
    for family in ("opt", "llama"):
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        config = tiny_lm_config(family, len(tok), tok.eos_token_id)
        config.num_hidden_layers, config.initializer_range = NUM_LAYERS, 0.1
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(f"of-lm-{family}")
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
        if family == "llama":
            tok.pad_token = None
        tok.save_pretrained(path)
        paths[family] = str(path)
    return paths


def perturb_trainable(model, seed: int = 1) -> None:
    """Random non-zero gates and perturbed resampler/block weights (their init has LayerNorms at 1/0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and "embed" not in name:
                scale = 0.5 if name.endswith("_gate") else 0.05
                param.add_(torch.randn(param.shape, generator=gen) * scale)


@pytest.fixture(scope="module")
def pairs(lm_paths, vision_dirs):
    """(family, every) → (OpenFlamingo model, its tokenizer, converted Flamingo), built on demand."""
    cache = {}

    def get(family: str, every: int):
        if (family, every) not in cache:
            torch.manual_seed(0)
            vision = CLIPVisionModel.from_pretrained(vision_dirs["clip"])
            theirs, their_tok = build_openflamingo(lm_paths[family], vision, cross_attn_every_n_layers=every)
            perturb_trainable(theirs)
            theirs.eval()
            ours = from_openflamingo(theirs.state_dict(), lm=lm_paths[family], vision=vision_dirs["clip"])
            cache[family, every] = theirs, their_tok, ours.eval()
        return cache[family, every]

    return get


def make_batch(model: Flamingo, padding_side: str, seed: int = 0):
    tok = model.tokenizer
    tok.padding_side = padding_side
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    counts = (enc.input_ids == model.media_token_id).sum(1, keepdim=True)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(TEXTS), N_MEDIA, 1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    media_mask = torch.arange(N_MEDIA) < counts  # (b, n): real slots first
    pixels[~media_mask] = 0.0  # OpenFlamingo encodes padding slots too; they must not matter
    return enc.input_ids, enc.attention_mask, pixels, media_mask


def test_tokens_and_config_follow_openflamingo(pairs):
    theirs, their_tok, ours = pairs("opt", 2)
    # OpenFlamingo adds <|endofchunk|> before <image>: the converted tokenizer keeps its ids.
    for token in ("<image>", "<|endofchunk|>"):
        assert ours.tokenizer.convert_tokens_to_ids(token) == their_tok.convert_tokens_to_ids(token)
    assert (ours.media_token_id, ours.eoc_token_id) == (theirs.media_token_id, theirs.eoc_token_id)
    c = ours.config
    assert (c.cross_attn_every, c.cross_attn_offset) == (2, 1)
    assert ours.language_model.xattn_layer_ids == [1, 3]  # theirs: (layer_idx + 1) % n == 0
    assert c.activation == "gelu" and not c.resampler_time_embeddings and ours.resampler.time_embeddings is None
    assert (c.num_latents, c.resampler_depth, c.resampler_heads, c.xattn_heads) == (64, 6, 8, 8)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("family", ["opt", "llama"])
def test_logits_and_loss_match(pairs, family, every, padding_side):
    theirs, _, ours = pairs(family, every)
    ids, mask, pixels, media_mask = make_batch(ours, padding_side)
    # A left-padded row's first token is "predicted" from a padding position: not a real target.
    predicted_from_text = F.pad(mask[:, :-1], (1, 0)).bool()
    labels = ids.masked_fill(~mask.bool() | ~predicted_from_text | (ids == ours.media_token_id), -100)
    with torch.no_grad():
        a = theirs(pixels, ids, mask, labels=labels)
        b = ours(ids, mask, pixel_values=pixels, media_mask=media_mask, labels=labels)
    vocab = b.logits.shape[-1]
    real = mask.bool()  # padded positions get different (irrelevant) position ids
    # Llama's tokenizer has no pad token: OpenFlamingo adds a <PAD> row, one logit column more than ours.
    assert a.logits.shape[-1] == vocab + (family == "llama")
    torch.testing.assert_close(b.logits[real], a.logits[real][:, :vocab], atol=1e-5, rtol=1e-5)
    if family == "opt":
        torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    else:  # the extra <PAD> column takes softmax mass in theirs: equal once it is dropped
        loss = F.cross_entropy(a.logits[:, :-1, :vocab].flatten(0, 1), labels[:, 1:].flatten())
        torch.testing.assert_close(b.loss, loss, atol=1e-5, rtol=1e-5)


def test_gradients_match(pairs):
    """A training step sees the same gradients: resampler, blocks, and the two new embedding rows."""
    theirs, _, ours = pairs("opt", 2)
    ids, mask, pixels, media_mask = make_batch(ours, "right", seed=1)
    labels = ids.masked_fill(~mask.bool(), -100)
    theirs.zero_grad()
    ours.zero_grad()
    theirs(pixels, ids, mask, labels=labels).loss.backward()
    ours(ids, mask, pixel_values=pixels, media_mask=media_mask, labels=labels).loss.backward()
    their_grads = dict(theirs.named_parameters(remove_duplicate=False))
    first = ours.language_model.new_tokens.first_id
    embed = their_grads["lang_encoder.model.decoder.embed_tokens.weight"].grad
    new_rows = ours.language_model.new_tokens.input
    torch.testing.assert_close(new_rows.grad, embed[first : first + 2], atol=1e-5, rtol=1e-4)
    for i, layer in enumerate(ours.language_model.xattn_layer_ids):
        for name, param in ours.language_model.gated_xattn[i].named_parameters():
            other = their_grads[f"lang_encoder.gated_cross_attn_layers.{layer}.{name}"].grad
            torch.testing.assert_close(param.grad, other.reshape(param.grad.shape), atol=1e-5, rtol=1e-4)
    for name, param in ours.resampler.named_parameters():
        torch.testing.assert_close(param.grad, their_grads[f"perceiver.{name}"].grad, atol=1e-5, rtol=1e-4)
    theirs.zero_grad()
    ours.zero_grad()


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("family", ["opt", "llama"])
def test_generation_matches(pairs, family, num_beams):
    """Greedy and beam search give the same tokens on a left-padded batch.

    By design, ours never emits ``<image>`` (there would be no image behind it) and stops at EOS as
    well as ``<|endofchunk|>``; OpenFlamingo does neither, and after a generated ``<image>`` its cached
    media lose track of which image a token sees. Theirs is given ``bad_words_ids`` and ours
    ``eos_token_id=<|endofchunk|>`` so that both follow the same rules.
    """
    theirs, _, ours = pairs(family, 2)
    ids, mask, pixels, media_mask = make_batch(ours, "left", seed=2)
    with torch.no_grad():
        a = theirs.generate(
            pixels,
            ids,
            mask,
            max_new_tokens=10,
            num_beams=num_beams,
            bad_words_ids=[[ours.media_token_id]],
            pad_token_id=ours.tokenizer.pad_token_id,
        )
        b = ours.generate(
            ids,
            mask,
            pixel_values=pixels,
            media_mask=media_mask,
            max_new_tokens=10,
            num_beams=num_beams,
            eos_token_id=ours.eoc_token_id,
        )
    assert b.shape[1] > ids.shape[1]
    assert torch.equal(a, b)


def trainer_checkpoint(theirs) -> dict:
    """What OpenFlamingo's trainer writes (train_utils.filter_state_dict_to_trainable + save_checkpoint)."""
    state = theirs.state_dict()
    for name, param in theirs.named_parameters():
        if "embed" not in name and not param.requires_grad:
            state.pop(name, None)
    state = {
        k: v
        for k, v in state.items()
        if not any(s in k for s in ("old_decoder_blocks", "gated_cross_attn_layers", "vision_encoder"))
    }
    return {"epoch": 0, "model_state_dict": {f"module.{k}": v for k, v in state.items()}}


def test_trainer_checkpoint_converts_through_the_cli(pairs, lm_paths, vision_dirs, tmp_path, caplog):
    """A checkpoint file as their trainer saves it, converted by ``flamingo convert openflamingo``.

    Their trainer saves the embedding matrices but not Llama's (untied) ``lm_head``: OpenFlamingo
    re-draws its new rows at random on every load, ours take the mean row. Every other column agrees.
    """
    theirs, _, _ = pairs("llama", 2)
    ckpt = tmp_path / "checkpoint_0.pt"
    torch.save(trainer_checkpoint(theirs), ckpt)
    out = tmp_path / "converted"
    with caplog.at_level(logging.WARNING, logger="flamingo_vlm.convert.openflamingo"):
        assert (
            cli_main(
                [
                    "convert",
                    "openflamingo",
                    str(ckpt),
                    "--lm",
                    lm_paths["llama"],
                    "--vision",
                    vision_dirs["clip"],
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    assert "output-embedding rows" in caplog.text
    ours = Flamingo.from_pretrained(out).eval()
    ids, mask, pixels, media_mask = make_batch(ours, "right", seed=3)
    with torch.no_grad():
        a = theirs(pixels, ids, mask).logits
        b = ours(ids, mask, pixel_values=pixels, media_mask=media_mask).logits
    first = ours.language_model.new_tokens.first_id
    keep = torch.ones(b.shape[-1], dtype=torch.bool)
    keep[first : first + 2] = False
    real = mask.bool()
    torch.testing.assert_close(b[real][:, keep], a[real][:, : b.shape[-1]][:, keep], atol=1e-5, rtol=1e-5)


def test_refuses_checkpoints_that_do_not_fit(pairs, lm_paths, vision_dirs):
    theirs, _, _ = pairs("llama", 2)
    state = theirs.state_dict()

    def convert(ckpt, **kw):
        return from_openflamingo(ckpt, lm=lm_paths["llama"], vision=vision_dirs["clip"], **kw)

    with pytest.raises(ValueError, match="unexpected keys.*'extra.weight'"):
        convert({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"lacks weights for \['resampler.norm.weight'\]"):
        convert({k: v for k, v in state.items() if k != "perceiver.norm.weight"})
    with pytest.raises(ValueError, match="cross_attn_every_n_layers=1"):
        convert(state, cross_attn_every_n_layers=1)
    key = "lang_encoder.model.layers.0.decoder_layer.mlp.up_proj.weight"
    duplicate = "lang_encoder.old_decoder_blocks.0.mlp.up_proj.weight"
    with pytest.raises(ValueError, match="differs from its duplicate"):
        convert({**state, key: state[key] + 1.0})
    with pytest.raises(ValueError, match="trained on another LM"):
        convert({**state, key: state[key] + 1.0, duplicate: state[key] + 1.0})
    with pytest.raises(ValueError, match="does not exist"):
        convert("/nonexistent/checkpoint.pt")


def test_config_options_default_to_the_paper_and_are_validated():
    config = FlamingoConfig()
    assert config.cross_attn_offset == 0 and config.resampler_time_embeddings
    with pytest.raises(ValueError, match="cross_attn_offset"):
        FlamingoConfig(cross_attn_every=2, cross_attn_offset=2)
