"""The seeded slice of the evaluation kill campaign: ``flamingo eval`` SIGKILLed, then resumed with ``--resume``."""

import faults_eval_kill


def test_eval_kill_slice(tmp_path):
    [row] = faults_eval_kill.run(seed=0, scale=0.1, workdir=tmp_path)
    assert row.ok, row.failures
    counts = row.extra
    assert counts["kills"] >= 1 and counts["resumes"] == 2  # (a run may finish before its kill moment)
    assert counts["runs_matched"] == counts["resumes"]  # results.json and predictions.jsonl byte-identical
    assert counts["partial_outputs_visible"] == counts["duplicated_lines"] == 0
