"""Shared fixtures: a locally trained tokenizer and tiny random models saved like hub checkpoints.

Nothing is downloaded: every LM and vision encoder is built from a config with random weights,
saved to a temporary directory, and loaded back through the same code path as a hub model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from flamingo_vlm.tokenization import train_bpe_tokenizer

CORPUS = [
    "a red square is above a blue circle.",
    "Question: what colour is the triangle? Answer: green",
    "Output: two yellow stars on a grey background.",
    "the dax is the red circle and the blicket is the blue square.",
    "An image of a cat sitting on a mat, next to a dog.",
    "How many shapes are there? Answer: three",
] * 4

VOCAB = 300
IMAGE_SIZE = 32
LM_FAMILIES = ("gpt2", "opt", "llama", "gpt_neox", "qwen2")


def tiny_lm_config(family: str, vocab_size: int, eos: int):
    """A 2-layer, 32-wide random LM of the given family."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    if family == "gpt2":
        return GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=128, **common)
    if family == "opt":
        return OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
                         word_embed_proj_dim=32, max_position_embeddings=128, **common)
    if family == "llama":
        return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, max_position_embeddings=128, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             max_position_embeddings=128, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=True, **common)
    raise ValueError(family)


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

    from flamingo_vlm.model.vision import HFVisionTower, NFNetConfig, NFNetEncoder

    torch.manual_seed(0)
    vit = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
               image_size=IMAGE_SIZE, patch_size=8)
    encoders = {
        "nfnet": NFNetEncoder(NFNetConfig(image_size=IMAGE_SIZE, stem_width=8, widths=(8, 16), depths=(1, 1),
                                          hidden_size=24)),
        "clip": HFVisionTower(CLIPVisionModel(CLIPVisionConfig(**vit)), drop_cls=True),
        "siglip": HFVisionTower(SiglipVisionModel(SiglipVisionConfig(**vit)), drop_cls=False),
    }
    dirs = {}
    for name, encoder in encoders.items():
        path = tmp_path_factory.mktemp(f"vision-{name}")
        encoder.save_pretrained(path)
        dirs[name] = str(path)
    return dirs


def tiny_flamingo_kwargs() -> dict:
    return dict(num_latents=4, resampler_depth=1, resampler_heads=2, resampler_dim_head=8, xattn_heads=2,
                xattn_dim_head=8, max_frames=4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
