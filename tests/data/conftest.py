"""Fixtures for the data tests (helpers live in data_fixtures.py)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from flamingo_vlm.tokenization import add_flamingo_tokens


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    add_flamingo_tokens(tok)
    return tok
