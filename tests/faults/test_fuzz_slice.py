"""The fuzz campaign's seeded slice: every input path meets broken records and ends each case in a counted skip
or a ValueError, within its time bound, without losing a good record."""

from __future__ import annotations

import time

import faults_fuzz


def test_fuzz_slice_loses_nothing(tmp_path):
    start = time.perf_counter()
    rows = faults_fuzz.run(seed=1, scale=0.2, workdir=tmp_path)
    elapsed = time.perf_counter() - start
    assert [r.path for r in rows] == [
        "data build-web",
        "InterleavedDataset",
        "ImageTextDataset",
        "VideoTextDataset",
        "FlamingoProcessor",
        "eval task readers",
        "flamingo generate",
        "model API",
    ]
    for row in rows:
        assert row.ok, f"{row.path}: {row.failures}"
        assert row.cases >= 4 and row.good_expected > 0 or row.path == "model API"
    # the slice exercises refusals too: skips counted by reason and ValueErrors naming the problem
    assert sum(sum(r.skips.values()) for r in rows) > 0 and sum(r.value_errors for r in rows) > 0
    assert sum(r.cases for r in rows) >= 60
    assert elapsed < 40, f"the slice took {elapsed:.0f} s"
