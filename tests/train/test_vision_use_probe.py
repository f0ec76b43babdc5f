"""The vision-use probe on a real Flamingo, alone and in the trainer's log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flamingo_vlm.model.vision_use import measure_vision_use


def test_a_fresh_model_does_not_see_and_a_trained_probe_reads_its_gates(make_config, tiny_model):
    from flamingo_vlm.train.build import build_mixture

    model = tiny_model()
    batch = next(iter(build_mixture(make_config(), model)))["pairs"][0]
    fresh = measure_vision_use(model, batch)
    assert fresh.gap_shuffled == 0.0 and fresh.gap_blank == 0.0  # gates at 0: identity, images unused
    assert fresh.attn_gates == [0.0] * len(model.language_model.gated_xattn)
    assert fresh.update_ratios == [0.0] * len(model.language_model.gated_xattn)
    with torch.no_grad():
        for block in model.language_model.gated_xattn:
            block.attn_gate.fill_(0.5)
    opened = measure_vision_use(model, batch)
    assert opened.attn_gates == pytest.approx([torch.tensor(0.5).tanh().item()] * len(opened.attn_gates))
    assert opened.gap_shuffled != 0.0 and all(r > 0 for r in opened.update_ratios)
    assert model.training  # the probe restores the mode it found


def test_trainer_logs_the_probe(make_config, tiny_model):
    from flamingo_vlm.train import Trainer
    from flamingo_vlm.train.build import build_mixture, build_probe_batch

    config = make_config(max_steps=4)
    config.logging.probe_every = 2
    model = tiny_model()
    trainer = Trainer(model, config, build_mixture(config, model), probe=build_probe_batch(config, model))
    summary = trainer.fit()
    records = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    probed = [r["step"] for r in records if "vision/gap_shuffled" in r]
    assert probed == [1, 2, 4]
    assert summary["vision_use"]["vision/attn_gates"] == records[-1]["vision/attn_gates"]
