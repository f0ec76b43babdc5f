import json
from pathlib import Path

import pytest

from flamingo_vlm.cli import main
from flamingo_vlm.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def tiny_run(lm_dirs, vision_dirs, train_shards, out) -> list[str]:
    """configs/train/tiny-cpu.yaml and the overrides that point it at the test's models and shards."""
    return [
        str(CONFIGS / "tiny-cpu.yaml"),
        f"model.lm={lm_dirs['llama']}",
        f"model.vision={vision_dirs['nfnet']}",
        f"data.datasets.0.shards={json.dumps(train_shards['web'])}",
        f"data.datasets.1.shards={json.dumps(train_shards['pairs'])}",
        f"output_dir={out}",
    ]


def test_flamingo_train_on_real_shards_then_resume(lm_dirs, vision_dirs, train_shards, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *tiny_run(lm_dirs, vision_dirs, train_shards, out)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 4 and summary["skipped_steps"] == 0 and summary["tokens_per_s"] > 0
    assert set(summary["final_losses"]) == {"web", "pairs"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"loss/web", "loss/pairs", "lr", "grad_norm", "tokens_per_s", "samples_per_s"} <= set(records[0])
    assert records[0]["lr"] == pytest.approx(1e-3 / 2)  # warm-up: step 1 of 2
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-00000002", "step-00000004"]
    assert TrainConfig.load(out / "config.yaml").max_steps == 4

    assert main([*args, "max_steps=6", "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and summary["optimizer_steps"] == 6
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 1.0e-4\n  warmup_step: 10\n")
    with pytest.raises(ValueError, match=r"optim\.warmup_step"):
        TrainConfig.load(path)
    with pytest.raises(ValueError, match=r"data\.datasets\.0\.lamda"):
        TrainConfig.from_dict({"data": {"datasets": [{"name": "a", "type": "image_text", "shards": "x", "lamda": 1}]}})


def test_overrides_and_type_checks(tmp_path):
    config = TrainConfig.load(
        CONFIGS / "flamingo-paper.yaml",
        ["optim.lr=3e-4", "data.datasets.3.weight=0.5", "optim.grad_clip=null", "max_steps=10"],
    )
    assert config.optim.lr == 3e-4 and config.data.datasets[3].weight == 0.5 and config.optim.grad_clip is None
    assert [d.weight for d in config.data.datasets[:3]] == [1.0, 0.2, 0.2] and config.optim.warmup_steps == 5000
    with pytest.raises(ValueError, match="optim.schedule must be one of"):
        TrainConfig.load(CONFIGS / "flamingo-paper.yaml", ["optim.schedule=linear"])
    with pytest.raises(ValueError, match="max_steps must be int"):
        TrainConfig.load(CONFIGS / "flamingo-paper.yaml", ["max_steps=many"])
    with pytest.raises(ValueError, match="key=value"):
        TrainConfig.load(CONFIGS / "flamingo-paper.yaml", ["max_steps"])
    with pytest.raises(ValueError, match="no item '9'"):
        TrainConfig.load(CONFIGS / "flamingo-paper.yaml", ["data.datasets.9.weight=1"])
    assert TrainConfig.from_dict(config.to_dict()) == config  # round trip


def test_flamingo_run_launches_train_on_two_processes(lm_dirs, vision_dirs, train_shards, tmp_path):
    """``flamingo run train CONFIG --nproc-per-node 2`` goes through torchrun's launcher: both ranks train
    together (DDP on gloo) and rank 0 writes the run's metrics and its checkpoint."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    run = tiny_run(lm_dirs, vision_dirs, train_shards, out)
    command = [sys.executable, "-m", "flamingo_vlm", "run", "train", *run, "max_steps=2", "--nproc-per-node", "2"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert json.loads(done.stdout[done.stdout.index("{") :])["steps"] == 2  # one summary: rank 0's
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert (out / "checkpoints" / "step-00000002").is_dir()
