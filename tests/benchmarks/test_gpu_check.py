"""benchmarks/gpu_check.py runs on GPU machines; here its CPU run (tiny model) must pass every check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK_NAMES = ("bf16_train", "fp32_vs_cpu", "caches", "device_map", "fsdp2_step", "eval_shapesworld")


@pytest.fixture
def gpu_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gpu_check


def test_gpu_check_passes_on_cpu(gpu_check, capsys) -> None:
    """In this process (imports are paid already); the FSDP2 check opens and closes its own process group."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    code = gpu_check.main(["--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert not dist.is_initialized()
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split()[1:2] in (["PASS"], ["FAIL"])}
    assert rows == dict.fromkeys(CHECK_NAMES, "PASS")
    assert f"{len(CHECK_NAMES)}/{len(CHECK_NAMES)} passed" in out


class _Unsaved:
    """Stands in for the model: the broken check below never looks at it."""

    def eval(self):
        return self

    def save_pretrained(self, directory) -> None:
        pass


def test_a_failed_check_fails_the_run(gpu_check, monkeypatch, capsys) -> None:
    def broken(ctx) -> str:
        raise AssertionError("logits differ")

    monkeypatch.setitem(gpu_check.CHECKS, "caches", broken)
    monkeypatch.setattr(gpu_check, "build_small_flamingo", lambda *a, **k: _Unsaved())
    assert gpu_check.main(["--device", "cpu", "--only", "caches"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "AssertionError: logits differ" in out and "0/1 passed" in out
