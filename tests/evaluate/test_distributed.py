"""Sharded and resumable evaluation: 2 gloo ranks, a SIGKILL and a resume, a torn log line and a foreign log all
give (or refuse to give) the single uninterrupted process's ``results.json``, byte for byte.

One generate task (VQAv2, with an undecodable support image and an undecodable query image, so the ranks must
agree on what was broken) and one close-ended task (HatefulMemes with two support orderings per query), on the
tiny saved Flamingo, with batches of 2 over 5 queries (3 batches: the ranks get unequal shares).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flamingo_vlm import cli

TASKS = ("vqav2", "hateful_memes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def eval_argv(tiny_flamingo_dir, benchmark_writer, tmp_path):
    """``flamingo eval`` arguments for both tasks, less ``--output``."""
    roots = {task: benchmark_writer(task, n_train=6, n_eval=5) for task in TASKS}
    (roots["vqav2"] / "train2014" / "COCO_train2014_000000000003.jpg").write_bytes(b"broken support")
    (roots["vqav2"] / "val2014" / "COCO_val2014_000000001003.jpg").write_bytes(b"broken query")
    argv = ["eval", "--model", str(tiny_flamingo_dir), "--task", *TASKS, "--data-root", *map(str, roots.values())]
    argv += ["--shots", "0", "2", "--trials", "2", "--batch-size", "2", "--ensembles", "2", "--num-beams", "2"]
    argv += ["--template", "hateful_memes=<image>{text}? {answer}<|endofchunk|>"]
    return argv + ["--no-progress", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]


def _env() -> dict[str, str]:
    """Child processes: this checkout's package, one thread (as torchrun's ranks), as the reference runs."""
    src = str(Path(cli.__file__).resolve().parents[1])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def _in_process(argv: list[str]) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: the same kernels, the same sums
    try:
        return cli.main(argv)
    finally:
        torch.set_num_threads(threads)


def _outputs(out: Path) -> tuple[bytes, bytes]:
    return (out / "results.json").read_bytes(), (out / "predictions.jsonl").read_bytes()


@pytest.fixture
def reference(eval_argv, tmp_path) -> tuple[bytes, bytes]:
    out = tmp_path / "reference"
    assert _in_process([*eval_argv, "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    vqa = results["tasks"]["vqav2"]
    assert vqa["bad_inputs"] == {"eval": {"undecodable_media": 1}, "support": {"undecodable_media": 1}}
    assert (
        json.loads((out / "timing.json").read_text())["predictions_made"] == 4 * (4 + 5) + 1
    )  # units x queries, and the broken one once
    return _outputs(out)


def test_two_gloo_ranks_equal_one_process(eval_argv, reference, tmp_path) -> None:
    out = tmp_path / "two-ranks"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    done = subprocess.run(
        [*command, "-m", "flamingo_vlm", *eval_argv, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr[-5000:]
    assert _outputs(out) == reference
    logs = sorted(p.name for p in (out / "prediction_logs").glob("rank-*.jsonl"))
    assert logs == ["rank-0.jsonl", "rank-1.jsonl"]
    assert all((out / "prediction_logs" / name).stat().st_size > 0 for name in logs)  # both ranks predicted
    assert json.loads((out / "timing.json").read_text())["world_size"] == 2


def test_killed_and_resumed_gives_identical_results(eval_argv, reference, tmp_path) -> None:
    out = tmp_path / "killed"
    log = out / "prediction_logs" / "rank-0.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-m", "flamingo_vlm", *eval_argv, "--output", str(out)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.read_bytes().count(b"\n") >= 7:  # a few predictions into the first task
            break
        time.sleep(0.002)
    assert child.poll() is None, "the evaluation finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "results.json").exists()
    made_before = log.read_bytes().count(b"\n")

    assert _in_process([*eval_argv, "--output", str(out), "--resume"]) == 0
    assert _outputs(out) == reference
    timing = json.loads((out / "timing.json").read_text())
    assert timing["predictions_resumed"] == made_before and timing["predictions_made"] == 37 - made_before


def test_a_torn_last_line_is_ignored_and_cut(eval_argv, reference, tmp_path) -> None:
    """A kill mid-write leaves a line without its newline: it is not a prediction, and the resume cuts it."""
    out = tmp_path / "torn"
    assert _in_process([*eval_argv, "--output", str(out)]) == 0
    log = out / "prediction_logs" / "rank-0.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:20]) + lines[20][: len(lines[20]) // 2])  # 20 intact lines and half of one
    (out / "results.json").unlink()

    assert _in_process([*eval_argv, "--output", str(out), "--resume"]) == 0
    assert _outputs(out) == reference
    assert all(json.loads(line) for line in log.read_bytes().splitlines()) and log.read_bytes().endswith(b"\n")
    assert json.loads((out / "timing.json").read_text())["predictions_resumed"] == 20


def test_logs_of_another_run_are_refused(eval_argv, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    first = [*eval_argv[: eval_argv.index("--shots")], "--shots", "0", *eval_argv[eval_argv.index("--trials") :]]
    assert _in_process([*first, "--output", str(out)]) == 0
    capsys.readouterr()

    assert _in_process([*first, "--output", str(out)]) == 2  # neither --resume nor --overwrite
    assert "pass --resume" in capsys.readouterr().err
    assert _in_process([*first, "--output", str(out), "--resume", "--seed", "7"]) == 2
    assert "differs in: eval" in capsys.readouterr().err
    stored = (out / "prediction_logs" / "manifest.json").read_bytes()
    assert _in_process([*first, "--output", str(out), "--resume"]) == 0  # the same run: nothing left to predict
    assert json.loads((out / "timing.json").read_text())["predictions_made"] == 0
    assert (out / "prediction_logs" / "manifest.json").read_bytes() == stored

    assert _in_process([*first, "--output", str(out), "--overwrite", "--seed", "7"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 7


def test_a_log_of_a_changed_split_is_refused(eval_argv, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert _in_process([*eval_argv, "--output", str(out)]) == 0
    log = out / "prediction_logs" / "rank-0.jsonl"
    record = json.loads(log.read_bytes().splitlines()[0])
    log.write_text(json.dumps({**record, "id": "another-question"}) + "\n")
    with pytest.raises(ValueError, match="eval split does not"):
        _in_process([*eval_argv, "--output", str(out), "--resume"])


def test_a_torn_line_inside_the_log_is_refused(tmp_path) -> None:
    from flamingo_vlm.evaluate.prediction_log import PredictionLogError, read_lines

    path = tmp_path / "rank-0.jsonl"
    path.write_bytes(b'{"task": "t", "shots": 0, "seed": 0, "index": 0}\n{"task": "t", "sh\n{"task": "t"')
    with pytest.raises(PredictionLogError, match="line 2"):
        read_lines(path)
    path.write_bytes(b'{"task": "t", "shots": 0, "seed": 0, "index": 0}\n{"task": "t", "sh')
    records, intact = read_lines(path)
    assert len(records) == 1 and intact == path.read_bytes().index(b"\n") + 1


def test_two_rank_launcher_flag_reaches_torchrun(eval_argv, tmp_path, monkeypatch) -> None:
    """``flamingo eval --nproc-per-node 2`` hands the resolved config to torchrun's launcher."""
    import flamingo_vlm.recipes as recipes

    seen = {}

    def fake_launch(argv, nproc):
        seen["nproc"], seen["config"] = nproc, Path(argv[argv.index("--config") + 1]).read_text()
        return 0

    monkeypatch.setattr(recipes, "launch_distributed", fake_launch)
    assert cli.main([*eval_argv, "--output", str(tmp_path / "o"), "--nproc-per-node", "2", "--resume"]) == 0
    assert seen["nproc"] == 2 and "resume: true" in seen["config"] and "hateful_memes" in seen["config"]
    assert not (tmp_path / "o").exists()  # nothing is written before the ranks start
