import pytest
import torch
from transformers import AutoModelForCausalLM

from tiny import tiny_flamingo_kwargs
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
        lm, vision_dirs["nfnet"], tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir),
        decoder_layers_attr="model.layers", **tiny_flamingo_kwargs(),
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
    # The LM alone refuses to run its hooked layers without media rather than silently skipping them.
    with pytest.raises(RuntimeError, match="outside Flamingo.forward"):
        model.lm(input_ids=model.tokenizer(["hello"], return_tensors="pt").input_ids)
