"""Model-level contracts: identity at init, masking through the LM, padding, trainable split, I/O."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import IMAGE_SIZE, LM_FAMILIES, tiny_flamingo_kwargs
from transformers import AutoModelForCausalLM

from flamingo_vlm import Flamingo

TEXTS = [
    "<image>Output: a red square.<|endofchunk|><image>Output: a blue",
    "a cat<image>Question: what colour? Answer:",
]


def build(lm_dirs, vision_dirs, family="llama", vision="nfnet", **kw) -> Flamingo:
    return Flamingo.from_components(lm_dirs[family], vision_dirs[vision], **{**tiny_flamingo_kwargs(), **kw})


def open_gates(model: Flamingo, value: float = 0.8) -> None:
    with torch.no_grad():
        for blk in model.language_model.gated_xattn:
            blk.attn_gate.fill_(value)
            blk.ff_gate.fill_(value / 2)


def batch(model: Flamingo, texts=TEXTS, padding_side="right", n_media=2, frames=1):
    tok = model.tokenizer
    tok.padding_side = padding_side
    enc = tok(texts, padding=True, return_tensors="pt")
    counts = (enc.input_ids == model.media_token_id).sum(1)
    media_mask = torch.arange(n_media) < counts[:, None]  # (b, n)
    pixels = torch.randn(len(texts), n_media, frames, 3, IMAGE_SIZE, IMAGE_SIZE)
    return dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixels, media_mask=media_mask)


# ------------------------------------------------------------------------ identity at init


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_identity_at_init(lm_dirs, vision_dirs, family):
    model = build(lm_dirs, vision_dirs, family).eval()
    inputs = batch(model)
    other = {**inputs, "pixel_values": torch.randn_like(inputs["pixel_values"])}
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**other).logits)
        # Text without special tokens: exactly the bare LM's logits.
        bare = AutoModelForCausalLM.from_pretrained(lm_dirs[family]).eval()
        ids = model.tokenizer(["a red square is above a blue circle."], return_tensors="pt").input_ids
        ours = model(ids).logits
        theirs = bare(input_ids=ids).logits
    assert ours.shape[-1] == theirs.shape[-1] + 2  # two new token columns
    assert torch.equal(ours[..., : theirs.shape[-1]], theirs)


# ------------------------------------------------------------------------ masking through the LM


@pytest.mark.parametrize("mode", ["previous", "all_previous"])
def test_no_token_depends_on_a_later_image(lm_dirs, vision_dirs, mode):
    model = build(lm_dirs, vision_dirs, media_attention=mode).eval()
    open_gates(model)
    inputs = batch(model, texts=[TEXTS[0]])
    ids = inputs["input_ids"][0]
    image_pos = (ids == model.media_token_id).nonzero().flatten().tolist()
    with torch.no_grad():
        base = model(**inputs).logits[0]
        for j, pos in enumerate(image_pos):
            changed = inputs["pixel_values"].clone()
            changed[0, j] = torch.randn_like(changed[0, j])
            diff = (model(**{**inputs, "pixel_values": changed}).logits[0] - base).abs().amax(-1)  # (T,)
            assert torch.all(diff[:pos] == 0), f"tokens before image {j} changed"
            assert torch.all(diff[pos:] > 0), f"tokens from image {j} on did not see it"


def test_tokens_before_first_image_never_depend_on_images(lm_dirs, vision_dirs):
    model = build(lm_dirs, vision_dirs).eval()
    open_gates(model)
    inputs = batch(model, texts=[TEXTS[1]], n_media=1)
    first = (inputs["input_ids"][0] == model.media_token_id).nonzero()[0, 0].item()
    with torch.no_grad():
        a = model(**inputs).logits
        b = model(**{**inputs, "pixel_values": torch.randn_like(inputs["pixel_values"])}).logits
    assert first > 0
    assert torch.equal(a[:, :first], b[:, :first])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_unbatched_rows(lm_dirs, vision_dirs, family, side):
    model = build(lm_dirs, vision_dirs, family).eval()
    open_gates(model)
    inputs = batch(model, padding_side=side)
    with torch.no_grad():
        batched = model(**inputs).logits
        for row in range(len(TEXTS)):
            valid = inputs["attention_mask"][row].bool()
            n_real = int(inputs["media_mask"][row].sum())
            alone = model(
                inputs["input_ids"][row : row + 1, valid],
                pixel_values=inputs["pixel_values"][row : row + 1, :n_real],
            ).logits[0]
            torch.testing.assert_close(batched[row, valid], alone, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------ what trains


def test_only_new_parts_train_and_frozen_weights_do_not_move(lm_dirs, vision_dirs):
    model = build(lm_dirs, vision_dirs, "gpt2").train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("resampler.", "language_model.gated_xattn.", "language_model.new_tokens.")) for n in trainable
    )
    assert not model.lm.training and not model.vision.training  # frozen parts stay in eval mode
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    new_before = model.language_model.new_tokens.input.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    open_gates(model, 0.5)  # so that gradients reach the blocks, the resampler and the new rows
    inputs = batch(model)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs, labels=labels).loss.backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    opt.step()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[name]), name
    assert not torch.equal(model.language_model.new_tokens.input, new_before)
    assert model.resampler.latents.grad is not None


def test_tied_lm_gets_tied_new_rows(lm_dirs, vision_dirs):
    tied = build(lm_dirs, vision_dirs, "qwen2").language_model.new_tokens
    untied = build(lm_dirs, vision_dirs, "llama").language_model.new_tokens
    assert tied.tied and tied.output is None
    assert not untied.tied and untied.output is not None


def test_lm_that_knows_the_markers_keeps_its_rows(tokenizer_dir, vision_dirs):
    # An LM pretrained with <image>/<|endofchunk|> in its vocabulary (ShapesWorld's) starts Flamingo
    # from its own rows: at init the model is that LM exactly, on text with the markers too.
    from tiny import tiny_lm_config
    from transformers import AutoTokenizer

    from flamingo_vlm.tokenization import add_flamingo_tokens

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    add_flamingo_tokens(tok)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_lm_config("llama", len(tok), tok.eos_token_id)).eval()
    bare = copy.deepcopy(lm)  # Flamingo hooks the LM it wraps
    model = Flamingo.from_components(lm, vision_dirs["nfnet"], tokenizer=tok, **tiny_flamingo_kwargs()).eval()
    ids = tok(TEXTS[:1], return_tensors="pt").input_ids
    with torch.no_grad():
        ours = model(ids, pixel_values=torch.randn(1, 2, 1, 3, IMAGE_SIZE, IMAGE_SIZE)).logits
        theirs = bare(input_ids=ids).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)  # the new columns are a separate matmul


def test_media_token_ids_are_exposed(lm_dirs, vision_dirs):
    model = build(lm_dirs, vision_dirs)
    assert model.tokenizer.convert_ids_to_tokens([model.media_token_id, model.eoc_token_id]) == [
        "<image>",
        "<|endofchunk|>",
    ]


# ------------------------------------------------------------------------ every family, every encoder


@pytest.mark.parametrize("family,vision", [(f, "nfnet") for f in LM_FAMILIES] + [("gpt2", "clip"), ("llama", "siglip")])
def test_forward_backward_and_round_trip(lm_dirs, vision_dirs, family, vision, tmp_path):
    model = build(lm_dirs, vision_dirs, family, vision, cross_attn_every=2)
    open_gates(model, 0.3)
    inputs = batch(model)
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.language_model.gated_xattn[0].attn_gate.grad is not None
    model.save_pretrained(tmp_path / "ckpt")
    restored = Flamingo.from_pretrained(tmp_path / "ckpt")
    model.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, restored(**inputs).logits)


def test_checkpoint_with_0d_gates_still_loads(lm_dirs, vision_dirs, tmp_path):
    """Checkpoints written before the gates had shape (1,) hold 0-d gates: they load, with equal logits."""
    from safetensors.torch import load_file, save_file

    from flamingo_vlm.model.flamingo import WEIGHTS_NAME

    model = build(lm_dirs, vision_dirs).eval()
    open_gates(model)
    model.save_pretrained(tmp_path / "ckpt")
    weights = load_file(tmp_path / "ckpt" / WEIGHTS_NAME)
    gates = [name for name in weights if name.endswith(("attn_gate", "ff_gate"))]
    assert gates and all(weights[name].shape == (1,) for name in gates)
    save_file(
        {k: v.reshape(()) if k in gates else v for k, v in weights.items()},
        tmp_path / "ckpt" / WEIGHTS_NAME,
        metadata={"format": "pt"},
    )
    restored = Flamingo.from_pretrained(tmp_path / "ckpt").eval()
    assert all(block.attn_gate.shape == (1,) for block in restored.language_model.gated_xattn)
    inputs = batch(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, restored(**inputs).logits)


def test_mismatched_checkpoint_shapes_are_refused(lm_dirs, vision_dirs):
    model = build(lm_dirs, vision_dirs)
    state = {k: v.detach().clone() for k, v in model.added_state_dict().items()}
    state["resampler.latents"] = state["resampler.latents"][:-1]
    with pytest.raises(ValueError, match="resampler.latents"):
        model.load_added_state_dict(state)


def test_full_checkpoint_is_self_contained(lm_dirs, vision_dirs, tmp_path):
    model = build(lm_dirs, vision_dirs, "opt", "clip").eval()
    open_gates(model)
    model.save_pretrained(tmp_path / "full", full=True)
    assert (tmp_path / "full" / "lm" / "config.json").is_file()
    assert (tmp_path / "full" / "vision" / "config.json").is_file()
    restored = Flamingo.from_pretrained(tmp_path / "full").eval()
    assert restored.config.lm == "lm"
    inputs = batch(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, restored(**inputs).logits)


def test_cross_attn_every_places_blocks(lm_dirs, vision_dirs):
    assert build(lm_dirs, vision_dirs, cross_attn_every=1).language_model.xattn_layer_ids == [0, 1]
    assert build(lm_dirs, vision_dirs, cross_attn_every=2).language_model.xattn_layer_ids == [0]


# ------------------------------------------------------------------------ video


@pytest.mark.parametrize("frames", [1, 8, 30])
def test_video_inputs(lm_dirs, vision_dirs, frames):
    model = build(lm_dirs, vision_dirs, max_frames=8)
    open_gates(model)
    inputs = batch(model, frames=frames)
    out = model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(out.logits).all()


def test_precomputed_vision_features_match_pixels(lm_dirs, vision_dirs):
    model = build(lm_dirs, vision_dirs).eval()
    open_gates(model)
    inputs = batch(model)
    pixels = inputs.pop("pixel_values")
    with torch.no_grad():
        features = model.vision(pixels.flatten(0, 2)).unflatten(0, pixels.shape[:3])  # (b, n, t, v, d)
        a = model(**inputs, pixel_values=pixels).logits
        b = model(**inputs, vision_features=features).logits
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("vision", ["nfnet", "clip"])  # a ViT refuses an empty batch of images
def test_media_slots_that_are_all_padding_encode_to_nothing(lm_dirs, vision_dirs, vision):
    """Text-only rows whose batch still has media slots (a split of a larger batch, or padding) cost no
    encoder call and answer as if no pixels were given."""
    model = build(lm_dirs, vision_dirs, vision=vision).eval()
    open_gates(model)
    enc = model.tokenizer(["a cat sat on", "the mat and"], return_tensors="pt")
    pixels, none = torch.randn(2, 2, 1, 3, IMAGE_SIZE, IMAGE_SIZE), torch.zeros(2, 2, dtype=torch.bool)
    with torch.no_grad():
        media = model.encode_media(enc.input_ids, pixels, media_mask=none)
        padded = model(enc.input_ids, enc.attention_mask, pixel_values=pixels, media_mask=none).logits
        plain = model(enc.input_ids, enc.attention_mask).logits
    assert media.shape[:2] == (2, 2) and not media.any()
    torch.testing.assert_close(padded, plain)


# ------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_named_value_errors(lm_dirs, vision_dirs):
    model = build(lm_dirs, vision_dirs)
    inputs = batch(model)
    with pytest.raises(ValueError, match=r"row 1: 1 <image> tokens vs 2 media"):
        model(**{**inputs, "media_mask": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"pixel_values must be .*got shape \(2, 2, 3, 32, 32\)"):
        model(**{**inputs, "pixel_values": inputs["pixel_values"][:, :, 0]})
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 1, 3, 16, 16\)"):
        model(**{**inputs, "pixel_values": torch.randn(2, 2, 1, 3, 16, 16)})
    with pytest.raises(ValueError, match=r"<image> tokens but no pixel_values"):
        model(inputs["input_ids"])
    with pytest.raises(ValueError, match=r"sequence of 200 tokens exceeds the LM's 128 positions"):
        model(torch.ones(1, 200, dtype=torch.long))
    with pytest.raises(ValueError, match=r"real media first"):
        model(**{**inputs, "media_mask": torch.tensor([[True, True], [False, True]])})
    with pytest.raises(ValueError, match=r"unknown vision encoder spec 'no/such/encoder'"):
        Flamingo.from_components(lm_dirs["llama"], "no/such/encoder")


def test_token_tensors_of_the_wrong_type_shape_or_range_are_named(lm_dirs, vision_dirs):
    """Fuzz campaign: these failed deep inside the embedding or an attention layer (RuntimeError, IndexError)."""
    model = build(lm_dirs, vision_dirs)
    inputs = batch(model)
    ids = inputs["input_ids"]
    out_of_vocab = ids.clone()
    out_of_vocab[0, -1] = len(model.tokenizer) + 5
    cases = {
        "input_ids must be an integer tensor, got Tensor of dtype torch.float32": {"input_ids": ids.float()},
        "input_ids must be an integer tensor, got list": {"input_ids": ids.tolist()},
        r"input_ids must lie in \[0, ": {"input_ids": out_of_vocab},
        r"with T >= 1; got shape \(2, 0\)": {"input_ids": ids[:, :0]},
        r"attention_mask must be a tensor of input_ids' shape": {"attention_mask": inputs["attention_mask"][:, 1:]},
        r"labels must be a tensor of input_ids' shape": {"labels": ids[:1]},
        "pixel_values must be a float tensor, got ndarray of dtype float32": {
            "pixel_values": inputs["pixel_values"].numpy()
        },
    }
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            model(**{**inputs, **change})
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model.generate(**{**inputs, "input_ids": out_of_vocab}, max_new_tokens=1)
