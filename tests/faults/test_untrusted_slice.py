"""A seeded slice of the untrusted-files campaign: every crafted file refused, nothing run, nothing leaked."""

import faults_untrusted
from faults_common import table


def test_untrusted_slice_refuses_everything(tmp_path):
    rows = faults_untrusted.run(seed=0, scale=0.3, workdir=tmp_path)
    assert [r.path for r in rows] == [
        "pickle payload by load location",
        "tar member traversal (shard readers)",
        "html <img src> traversal (build-web)",
        "json/yaml size and depth limits",
    ]
    for row in rows:
        assert row.ok, f"{row.path}: {row.failures}\n{table(rows)}"
        assert row.cases >= 2 and row.refused == row.cases  # every crafted file refused (or ignored), none ran
    # no payload ran anywhere in the work tree (a marker is only ever created by a payload)
    assert not list(tmp_path.rglob("MARKER"))
