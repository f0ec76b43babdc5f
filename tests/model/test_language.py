import pytest
import torch
from tiny import tiny_flamingo_kwargs
from transformers import AutoModelForCausalLM

from flamingo_vlm import Flamingo
from flamingo_vlm.model.language import find_decoder_layers


def test_unknown_architecture_names_the_fix(lm_dirs):
    lm = AutoModelForCausalLM.from_pretrained(lm_dirs["llama"])
    lm.config.model_type = "brand_new_lm"
    with pytest.raises(ValueError, match="decoder_layers_attr="):
        find_decoder_layers(lm)
    assert find_decoder_layers(lm, "model.layers") is lm.model.layers
    with pytest.raises(ValueError, match="no 'blocks'"):
        find_decoder_layers(lm, "model.blocks")


def test_layer_path_override_builds_a_model(lm_dirs, vision_dirs, tokenizer_dir):
    from transformers import AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(lm_dirs["llama"])
    lm.config.model_type = "brand_new_lm"
    model = Flamingo.from_components(
        lm,
        vision_dirs["nfnet"],
        tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir),
        decoder_layers_attr="model.layers",
        **tiny_flamingo_kwargs(),
    )
    assert len(model.language_model.gated_xattn) == 2


def test_no_visual_state_outlives_a_call(lm_dirs, vision_dirs):
    model = Flamingo.from_components(lm_dirs["gpt2"], vision_dirs["nfnet"], **tiny_flamingo_kwargs())
    ids = model.tokenizer(["<image>hello"], return_tensors="pt").input_ids
    model(ids, pixel_values=torch.randn(1, 1, 1, 3, 32, 32))
    assert model.language_model._scope is None
    with pytest.raises(ValueError):
        model(ids, pixel_values=torch.randn(1, 2, 1, 3, 32, 32))  # fails inside: scope still cleared
    assert model.language_model._scope is None


def test_the_wrapped_lm_still_works_alone_and_can_be_shared(lm_dirs, vision_dirs):
    """The hooks act only inside a Flamingo call: the bare LM is unchanged, two models share one LM."""
    lm = AutoModelForCausalLM.from_pretrained(lm_dirs["llama"])
    ids = torch.tensor([[5, 6, 7, 8]])
    before = lm(input_ids=ids).logits
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dirs["llama"])
    first = Flamingo.from_components(lm, vision_dirs["nfnet"], tokenizer=tok, **tiny_flamingo_kwargs())
    second = Flamingo.from_components(lm, vision_dirs["nfnet"], tokenizer=tok, **tiny_flamingo_kwargs())
    for model in (first, second):  # open gates, different per model, so each model's blocks matter
        for block in model.language_model.gated_xattn:
            torch.nn.init.uniform_(block.attn_gate, 0.3, 0.9)
            torch.nn.init.uniform_(block.ff_gate, 0.3, 0.9)
    assert torch.equal(lm(input_ids=ids).logits, before)
    text = first.tokenizer(["<image>a red square"], return_tensors="pt").input_ids
    pixels = torch.randn(1, 1, 1, 3, 32, 32)
    alone = Flamingo.from_components(lm_dirs["llama"], vision_dirs["nfnet"], **tiny_flamingo_kwargs())
    alone.load_added_state_dict(first.added_state_dict())
    out_first, out_second = first(text, pixel_values=pixels).logits, second(text, pixel_values=pixels).logits
    assert torch.allclose(out_first, alone(text, pixel_values=pixels).logits, atol=1e-6)
    assert not torch.allclose(out_first, out_second)
    assert torch.equal(lm(input_ids=ids).logits, before)


def test_lm_with_pickled_weights_is_refused_without_running_them(lm_dirs, tmp_path):
    """transformers reads a pickle ``pytorch_model.bin`` with weights_only=True; we name the refusal."""
    import shutil

    from tiny import replace_weights_with_pickle

    from flamingo_vlm.model.causal_lm import load_causal_lm

    lm = shutil.copytree(lm_dirs["llama"], tmp_path / "lm")
    marker = replace_weights_with_pickle(lm)
    with pytest.raises(ValueError, match=r"lm: its pickled weights were refused .*posix\.system"):
        load_causal_lm(str(lm))
    assert not marker.exists()


# ------------------------------------------------------------------------ large LMs: dtype and device_map

# The tiny Llama split over two device-map entries: layer 1 offloaded to disk, so accelerate's hooks load
# its weights for each call (they are on ``meta`` in between) and move activations, as on several GPUs.
SPLIT = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


def _prompt(model):
    tok = model.tokenizer
    tok.padding_side = "left"
    enc = tok(
        ["<image>Output: a red square.<|endofchunk|><image>Output: a", "a cat<image>Question: what?"],
        padding=True,
        return_tensors="pt",
    )
    counts = (enc.input_ids == model.media_token_id).sum(1)
    pixels = torch.randn(
        2, 2, 1, 3, model.vision.image_size, model.vision.image_size, generator=torch.Generator().manual_seed(1)
    )
    return dict(
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        pixel_values=pixels,
        media_mask=torch.arange(2) < counts[:, None],
    )


def test_device_map_split_lm_equals_the_unsplit_model(tiny_flamingo_dir, tmp_path):
    from flamingo_vlm.model.language import execution_device

    plain = Flamingo.from_pretrained(tiny_flamingo_dir).eval()
    spread = Flamingo.from_pretrained(
        tiny_flamingo_dir, device_map=SPLIT, lm_kwargs={"offload_folder": str(tmp_path)}
    ).eval()
    assert spread.lm_spread and not plain.lm_spread
    assert spread.lm.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # really offloaded
    layers = spread.lm.model.layers
    seen = []
    for block, layer_id in zip(spread.language_model.gated_xattn, spread.language_model.xattn_layer_ids):
        expected = execution_device(layers[layer_id], torch.device("meta"))
        assert block.attn_gate.device == expected

        def record(module, args, expected=expected):
            seen.append((args[0].device, module.attn_gate.device, expected))

        block.register_forward_pre_hook(record)
    inputs = _prompt(plain)
    with torch.no_grad():
        assert torch.allclose(spread(**inputs).logits, plain(**inputs).logits, atol=1e-6, rtol=0)
    assert seen and all(a == b == c for a, b, c in seen)  # every block ran where its layer runs
    kwargs = dict(max_new_tokens=6, min_new_tokens=6)
    for beams in (1, 3):
        expected_tokens = plain.generate(**inputs, num_beams=beams, **kwargs)
        assert torch.equal(spread.generate(**inputs, num_beams=beams, **kwargs), expected_tokens)
        assert torch.equal(spread.generate(**inputs, num_beams=beams, use_cache=False, **kwargs), expected_tokens)
    candidates = [[[5, 6], [7]], [[8, 9, 10]]]
    scored = spread.score(**inputs, candidates=candidates).sum_logprobs
    assert torch.allclose(scored, plain.score(**inputs, candidates=candidates).sum_logprobs, atol=1e-5, rtol=0)


def test_lm_dtype_loads_the_frozen_lm_in_bf16_and_keeps_trainable_parts_fp32(tiny_flamingo_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    loaded_with = {}
    original = AutoModelForCausalLM.from_pretrained

    def spy(path, **kwargs):
        loaded_with.update(kwargs)
        return original(path, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model = Flamingo.from_pretrained(tiny_flamingo_dir, lm_dtype="bf16").eval()
    # Loaded straight into bf16 (transformers fills meta tensors from the file): no fp32 copy, no cast after.
    assert loaded_with["dtype"] is torch.bfloat16
    assert {p.dtype for p in model.lm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.trainable_state_dict().values()} == {torch.float32}
    assert model.config.lm_dtype == "bf16"
    reference = Flamingo.from_pretrained(tiny_flamingo_dir, lm_dtype="fp32").eval()
    inputs = _prompt(model)
    with torch.no_grad():
        ours, theirs = model(**inputs).logits.float(), reference(**inputs).logits
    assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max()  # bf16 rounding, not a different model
    with pytest.raises(ValueError, match="lm_dtype"):
        Flamingo.from_pretrained(tiny_flamingo_dir, lm_dtype="int8")


def test_a_deep_copy_runs_its_own_gated_blocks(tiny_flamingo_dir):
    import copy

    model = Flamingo.from_pretrained(tiny_flamingo_dir).eval()
    twin = copy.deepcopy(model)
    inputs = _prompt(model)
    with torch.no_grad():
        assert torch.equal(twin(**inputs).logits, model(**inputs).logits)  # the gates are open: images matter
        for block in twin.language_model.gated_xattn:
            block.attn_gate.zero_()
            block.ff_gate.zero_()
        assert not torch.equal(twin(**inputs).logits, model(**inputs).logits)  # ... the copy's own blocks
