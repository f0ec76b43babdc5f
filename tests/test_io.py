"""Bounded JSON reads: a crafted file is a ValueError naming it, never a MemoryError or RecursionError."""

from __future__ import annotations

import json

import pytest

from flamingo_vlm.io import loads_json, read_bytes, read_json

DEEP = "[" * 100_000 + "]" * 100_000


def test_read_json_round_trips_and_refuses_oversized_and_deep_files(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"a": [1, {"b": "c"}]}))
    assert read_json(good) == {"a": [1, {"b": "c"}]}
    with pytest.raises(ValueError, match=r"good\.json is larger than the 10-byte limit"):
        read_json(good, max_bytes=10)
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with pytest.raises(ValueError, match=r"deep\.json nests deeper than the parser's limit"):
        read_json(deep)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        read_json(broken)


def test_read_bytes_never_reads_past_the_limit(tmp_path):
    """A device or a growing file has no meaningful size: the read itself is bounded."""
    with pytest.raises(ValueError, match="larger than the 1,024-byte limit"):
        read_bytes("/dev/zero", 1024)
    (tmp_path / "f").write_bytes(b"x" * 1024)
    assert read_bytes(tmp_path / "f", 1024) == b"x" * 1024


def test_loads_json_names_its_source():
    with pytest.raises(ValueError, match="record 7 nests deeper"):
        loads_json(DEEP, "record 7")
