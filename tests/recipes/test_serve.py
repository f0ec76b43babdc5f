"""``flamingo serve``: flags → ServeConfig, and the warning for a non-loopback bind without a key."""

from __future__ import annotations

import pytest

from flamingo_vlm.cli import main
from flamingo_vlm.recipes.serve import default_threads, is_loopback
from flamingo_vlm.serve.batching import available_cpus

uvicorn = pytest.importorskip("uvicorn")


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


@pytest.fixture
def launched(monkeypatch):
    """Run ``flamingo serve`` up to uvicorn.run, which records the app and address instead of serving."""
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def test_flags_reach_the_app(tiny_flamingo_dir, launched, capsys):
    args = ["serve", "--model", tiny_flamingo_dir, "--device", "cpu", "--port", "8123", "--max-tokens", "7",
            "--prompt-format", "vqa", "--api-key", "k", "--allow-remote-images"]  # fmt: skip
    assert main(args) == 0
    ((app, kwargs),) = launched
    config = app.state.server.config
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8123
    assert config.limits.max_tokens == 7 and config.api_key == "k" and config.allow_remote_images
    assert config.prompt_format.user_text == "Question: {text} Answer:"
    assert "WARNING" not in capsys.readouterr().err


def test_a_public_bind_without_key_warns(tiny_flamingo_dir, launched, capsys):
    assert main(["serve", "--model", tiny_flamingo_dir, "--device", "cpu", "--host", "0.0.0.0"]) == 0
    assert "without --api-key" in capsys.readouterr().err
    assert main(["serve", "--model", tiny_flamingo_dir, "--device", "cpu", "--host", "0.0.0.0", "--api-key", "k"]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_a_bad_prompt_format_fails_before_loading(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        main(["serve", "--model", str(tmp_path / "no-model"), "--prompt-format", "nope"])


def test_kernel_threads_leave_cpus_to_the_http_side(tiny_flamingo_dir, launched, monkeypatch):
    """--threads sets the model's CPU threads; without it, half the CPUs (at least one) go to the kernels."""
    import torch

    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    assert main(["serve", "--model", tiny_flamingo_dir, "--device", "cpu", "--threads", "3"]) == 0
    assert main(["serve", "--model", tiny_flamingo_dir, "--device", "cpu"]) == 0
    assert threads == [3, default_threads()] and default_threads() == max(1, available_cpus() // 2)


def test_zero_threads_is_refused_before_the_model_loads(launched):
    with pytest.raises(SystemExit, match="--threads must be at least 1"):
        main(["serve", "--model", "/nonexistent", "--device", "cpu", "--threads", "0"])
    assert not launched
