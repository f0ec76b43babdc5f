"""The memory estimator: exact parameter counts from the config, and the arithmetic of sharding and batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flamingo_vlm.train.build import build_model
from flamingo_vlm.train.memory_estimate import (
    GiB,
    estimate_memory,
    paper_shapes,
    shapes_from_config,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shapes_from_config_count_the_real_model(make_config):
    config = make_config()
    shapes = shapes_from_config(config.model)  # the LM built on meta: nothing loaded but the vision encoder
    model = build_model(config)
    assert shapes.lm_params == _count(model.lm)
    assert shapes.lm_layers == len(model.lm.model.layers)
    assert shapes.lm_layer_params == _count(model.lm.model.layers[0])
    assert shapes.vision_params == _count(model.vision)
    assert shapes.xattn_params == _count(model.language_model.gated_xattn)
    assert shapes.resampler_params == _count(model.resampler)
    assert shapes.new_token_params == _count(model.language_model.new_tokens)
    assert shapes.trainable_params == sum(p.numel() for p in model.trainable_state_dict().values())
    pixels = torch.zeros(1, 3, model.vision.image_size, model.vision.image_size)
    assert shapes.vision_tokens == model.vision(pixels).shape[1]


def test_fsdp_shards_weights_and_optimiser_state_but_not_activations(make_config):
    config = make_config(strategy="fsdp", precision="bf16")
    shapes = paper_shapes("9b", config.model)
    one, eight = estimate_memory(config, shapes, 1), estimate_memory(config, shapes, 8)
    for row in ("frozen LM weights", "trainable weights (fp32)", "gradients (fp32)", "AdamW moments (2 x fp32)"):
        assert eight.rows[row] == pytest.approx(one.rows[row] / 8)
    assert eight.rows["activations (largest micro-batch)"] == one.rows["activations (largest micro-batch)"]
    assert eight.rows["AdamW moments (2 x fp32)"] == pytest.approx(shapes.trainable_params * 8 / 8)
    ddp = estimate_memory(dataclasses.replace(config, strategy="ddp"), shapes, 8)
    assert ddp.rows["gradients (fp32)"] == one.rows["gradients (fp32)"]  # DDP replicates


def test_smaller_micro_batches_and_checkpointing_need_less_activation_memory(make_config):
    config = make_config(precision="bf16")
    shapes = paper_shapes("3b", config.model)
    base = estimate_memory(config, shapes, 1).rows["activations (largest micro-batch)"]
    halved = dataclasses.replace(config, optim=dataclasses.replace(config.optim, grad_accum=2))
    assert estimate_memory(halved, shapes, 1).rows["activations (largest micro-batch)"] == pytest.approx(base / 2)
    checkpointed = dataclasses.replace(config, activation_checkpointing=True)
    saved = base - estimate_memory(checkpointed, shapes, 1).rows["activations (largest micro-batch)"]
    # The web micro-batch (2 rows x 40 tokens) is the largest. Each of the 24 frozen layers keeps 2·b·s·d bytes
    # (its input) instead of 34·b·s·d, and one layer is recomputed at a time; the gated blocks keep theirs.
    b_s_d = 2 * 40 * shapes.lm_hidden
    assert saved == 24 * 34 * b_s_d - (24 * 2 * b_s_d + 34 * b_s_d)


@pytest.mark.parametrize(("layout", "paper_total"), [("3b", 3.2e9), ("9b", 9.3e9), ("80b", 80e9)])
def test_paper_layouts_have_the_papers_parameter_counts(make_config, layout, paper_total):
    shapes = paper_shapes(layout, make_config().model)
    assert abs(shapes.total_params - paper_total) < 0.1 * paper_total  # Alayrac et al. 2022, Table 5


def test_estimate_memory_cli(capsys):
    from flamingo_vlm.cli import main

    assert main(["train", "--estimate-memory", "--layout", "80b", "--gpus", "16"]) == 0
    out = capsys.readouterr().out
    assert "Flamingo-80B" in out and "fsdp over 16 GPU(s)" in out and "total" in out
    total = float(next(line for line in out.splitlines() if line.startswith("total")).split()[-1])
    assert 0 < total * GiB < 141 * GiB
