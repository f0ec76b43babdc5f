"""benchmarks/gpu_check.py runs on GPU machines; here its CPU run (tiny model) must pass every check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_passes_on_cpu() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {
        line.split()[0]: line.split()[1]
        for line in run.stdout.splitlines()
        if line.split()[1:2] in (["PASS"], ["FAIL"])
    }
    assert rows == dict.fromkeys(("bf16_train", "fp32_vs_cpu", "caches", "fsdp2_step", "eval_shapesworld"), "PASS")
    assert "5/5 passed" in run.stdout
