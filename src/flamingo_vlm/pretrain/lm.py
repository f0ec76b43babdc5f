"""Pretraining a small Llama-architecture causal LM on plain text, saved as a standard HF model.

Documents are packed into fixed windows separated by EOS, the standard recipe. Llama's rotary
position embeddings matter here: in-context copying (induction heads) forms far more readily with
relative positions than with learned absolute ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from flamingo_vlm.pretrain.schedule import optimise


@dataclass
class LMConfig:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    context: int = 256
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50


def build_llama(tokenizer: PreTrainedTokenizerBase, config: LMConfig) -> LlamaForCausalLM:
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=max(2048, config.context),
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
    )


def packed_windows(
    documents: Sequence[list[int]], eos_id: int, context: int, batch_size: int, seed: int = 0
) -> Iterator[torch.Tensor]:
    """Endless (batch, context) windows cut from a shuffled stream of EOS-separated documents."""
    if not documents:
        raise ValueError("no documents to pretrain on")
    rng = random.Random(seed)
    buffer: list[int] = []
    while True:
        rows = []
        while len(rows) < batch_size:
            while len(buffer) < context:
                buffer.extend(documents[rng.randrange(len(documents))] + [eos_id])
            rows.append(buffer[:context])
            buffer = buffer[context:]
        yield torch.tensor(rows)


def pretrain_lm(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    config: LMConfig,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``texts``; returns the loss history."""
    documents = [ids for ids in tokenizer(list(texts), add_special_tokens=False).input_ids if ids]
    windows = packed_windows(documents, tokenizer.eos_token_id, config.context, config.batch_size, seed)
    return optimise(
        model,
        windows,
        lambda ids: model(input_ids=ids, labels=ids).loss,
        steps=config.steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup=config.warmup_steps,
        on_step=on_step,
    )
