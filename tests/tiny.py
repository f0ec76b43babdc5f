"""Tiny random model configs shared by the tests (importable as ``tiny``: tests/ is on sys.path)."""

from __future__ import annotations

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
        return OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            word_embed_proj_dim=32,
            max_position_embeddings=128,
            **common,
        )
    if family == "llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            **common,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=128,
            **common,
        )
    if family == "qwen2":
        return Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            **common,
        )
    raise ValueError(family)


def tiny_flamingo_kwargs() -> dict:
    return dict(
        num_latents=4,
        resampler_depth=1,
        resampler_heads=2,
        resampler_dim_head=8,
        xattn_heads=2,
        xattn_dim_head=8,
        max_frames=4,
    )


class PicklePayload:
    """Unpickling it would create ``marker``: the crafted weights file every loader must refuse."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def replace_weights_with_pickle(directory, name: str = "pytorch_model.bin"):
    """Copy-free: swap a saved model's safetensors for a crafted torch file; returns the marker path."""
    from pathlib import Path

    import torch

    directory = Path(directory)
    for f in directory.glob("*.safetensors"):
        f.unlink()
    marker = directory / "MARKER"
    torch.save({"weight": PicklePayload(marker)}, directory / name)
    return marker
