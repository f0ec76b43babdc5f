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
