"""Tiny ShapesWorlds generated once per session: two from the same seed, one from another seed."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from flamingo_vlm.cli import main
from flamingo_vlm.tokenization import add_flamingo_tokens
from flamingo_vlm.world import WorldConfig, generate_world


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """Generated through the command line, as a user would."""
    out = tmp_path_factory.mktemp("world") / "seed0"
    assert main(["world", "generate", "--out", str(out), "--seed", "0", "--preset", "tiny", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def world_again(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world_again") / "seed0"
    generate_world(out, WorldConfig(seed=0, preset="tiny"))
    return out


@pytest.fixture(scope="session")
def other_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other_world") / "seed5"
    generate_world(out, WorldConfig(seed=5, preset="tiny"))
    return out


@pytest.fixture(scope="session")
def world_tokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    add_flamingo_tokens(tok)
    return tok
