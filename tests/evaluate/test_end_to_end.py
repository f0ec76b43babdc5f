"""Every task end to end through ``flamingo eval`` on a tiny random Flamingo and fixture files.

Random weights give meaningless numbers; what is checked is that each task runs through the real
model's ``generate``/``score`` and the processor, and that ``results.json`` has the documented shape.
"""

from __future__ import annotations

import json

import pytest

from flamingo_vlm.evaluate.tasks import TASKS


@pytest.mark.parametrize("task", sorted(TASKS))
def test_flamingo_eval_runs_each_task(task, request, benchmark_writer, tmp_path, capsys) -> None:
    from flamingo_vlm import cli

    try:
        model_dir = request.getfixturevalue("tiny_flamingo_dir")  # defined in tests/conftest.py
    except pytest.FixtureLookupError:
        pytest.skip("needs the tiny_flamingo_dir fixture (a saved tiny Flamingo)")
    root = benchmark_writer(task, n_train=4, n_eval=2)
    out = tmp_path / "out"
    shots = ["0"] if TASKS[task].zero_shot_only else ["0", "2"]  # RareAct is zero-shot only
    argv = [
        "eval",
        "--model",
        str(model_dir),
        "--task",
        task,
        "--data-root",
        str(root),
        "--shots",
        *shots,
        "--trials",
        "1",
        "--batch-size",
        "2",
        "--output",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    if task == "hateful_memes":  # also: RICES, ensembling, and a template short enough for a 128-position LM
        argv += ["--rices", "--ensembles", "2", "--template", "hateful_memes=<image>{text}? {answer}<|endofchunk|>"]
    if task == "ivqa":  # ShapesWorld's longest questions: two shots would overrun the tiny LM's 128 positions
        argv += ["--template", "ivqa=<image>{question} {answer}<|endofchunk|>"]
    assert cli.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["shots"] == [int(s) for s in shots] and results["model"] == str(model_dir)
    r = results["tasks"][task]
    assert r["num_evaluated"] == 2 and r["bad_inputs"] == {"eval": {}, "support": {}}
    for count in shots:
        summary = r["shots"][count]
        assert set(summary) == {"mean", "std", "trials"} and len(summary["trials"]) == 1
        assert all(isinstance(v, float) for v in summary["mean"].values())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(shots) and all(isinstance(row["prediction"], str) for row in rows)
    assert f"| {task} |" in capsys.readouterr().out
